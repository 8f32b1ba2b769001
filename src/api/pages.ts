// GET /t/{id}?sig=… — a task's read-only page for people (the `[task]` link of every comment):
// no token, but a signed link (src/task-links.ts). It shows what the comments show — state,
// attempts, result, cost — and never the prompt, the logs, the callback URL or other details.
import { Type as T } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyPluginAsync } from 'fastify';
import { costFields, describeCost } from '../activities/sinks';
import type { TaskStatus } from '../model';
import { historyUrl, taskLinkKey, verifyTaskLink } from '../task-links';
import { TaskError } from '../task-errors';
import type { PluginOptions } from './context';
import { ApiError } from './errors';

const escape = (text: string) => text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

export function renderTaskPage(status: TaskStatus, links: { historyUrl?: string }): string {
  const { input, result } = status;
  const rows: Array<[string, string]> = [
    ['task', escape(status.taskId)],
    ['repository', input.repo ? `${escape(input.repo)}${input.number ? ` #${input.number}` : ''}` : '—'],
    ['kind · type', `${escape(input.kind)} · ${escape(input.agentType)}`],
    ['state', `${escape(status.state)} (${escape(status.mode)})`],
  ];
  if (status.hold) rows.push(['held', `until ${escape(status.hold.until)}: ${escape(status.hold.reason)}`]);
  if (status.attempt > 0) rows.push(['attempt', String(status.attempt)]);
  if (result) {
    rows.push(['outcome', escape(result.outcome)]);
    if (result.branch) rows.push(['branch', `<code>${escape(result.branch)}</code>`]);
    if (result.rev) rows.push(['rev', `<code>${escape(result.rev)}</code>`]);
    const cost = describeCost(costFields(status));
    if (cost) rows.push(['cost', escape(cost)]);
  }
  if (status.cancelRequested && status.cancelReason) rows.push(['cancelled', escape(status.cancelReason)]);
  const attempts = status.attempts.map(
    (a) => `<tr><td>${a.attempt}</td><td>${escape(`${a.holder.kind} ${a.holder.id}`)}</td><td>${escape(a.mode)}</td><td>${escape(a.claimedAt)}</td><td>${escape(a.end)}${a.reason ? `: ${escape(a.reason)}` : ''}</td></tr>`,
  );
  return [
    '<!doctype html><html><head><meta charset="utf-8"><meta name="robots" content="noindex">',
    `<title>${escape(status.taskId)} · Drover</title>`,
    '<style>body{font:15px system-ui,sans-serif;max-width:56rem;margin:2rem auto;padding:0 1rem}td,th{padding:.2rem .6rem;text-align:left;vertical-align:top}pre{white-space:pre-wrap;background:#f4f4f4;padding:.8rem}</style>',
    `</head><body><h1>${escape(input.title)}</h1>`,
    `<table>${rows.map(([k, v]) => `<tr><th>${k}</th><td>${v}</td></tr>`).join('')}</table>`,
    result?.summary ? `<h2>Summary</h2><pre>${escape(result.summary)}</pre>` : '',
    attempts.length ? `<h2>Attempts</h2><table><tr><th>#</th><th>by</th><th>mode</th><th>claimed</th><th>end</th></tr>${attempts.join('')}</table>` : '',
    links.historyUrl ? `<p><a href="${escape(links.historyUrl)}">History in the Temporal Web UI</a></p>` : '',
    `<p><small>updated ${escape(status.updatedAt)}</small></p></body></html>`,
  ].join('\n');
}

export const pagesPlugin: FastifyPluginAsync<PluginOptions> = async (fastify, { ctx }) => {
  const key = taskLinkKey(ctx.config);
  fastify.withTypeProvider<TypeBoxTypeProvider>().get(
    '/t/:id',
    {
      schema: {
        summary: 'A task’s read-only page, for people (the link in comments); signed, no token',
        tags: ['tasks'],
        params: T.Object({ id: T.String({ maxLength: 300 }) }),
        querystring: T.Object({ sig: T.Optional(T.String({ maxLength: 64 })) }),
        description: 'HTML. 404 `task_not_found` for an unknown task and for a wrong signature alike.',
        produces: ['text/html'],
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      // A wrong signature and an unknown task look the same: a page is no oracle for task ids.
      const notFound = () => new ApiError(404, 'task_not_found', `no task page at ${id}`);
      if (!key || !verifyTaskLink(key, id, request.query.sig)) throw notFound();
      let status: TaskStatus;
      try {
        status = await ctx.tasks.status(id);
      } catch (error) {
        if (error instanceof TaskError && error.code === 'task_not_found') throw notFound();
        throw error;
      }
      const ui = ctx.config.api.temporalUiUrl;
      return reply
        .type('text/html; charset=utf-8')
        .header('cache-control', 'no-store')
        .header('content-security-policy', "default-src 'none'; style-src 'unsafe-inline'")
        .header('referrer-policy', 'no-referrer')
        .send(renderTaskPage(status, ui ? { historyUrl: historyUrl(ui, ctx.config.temporal.namespace, id) } : {}));
    },
  );
};
