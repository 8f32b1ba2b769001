// Where task events go: a comment on the Forgejo issue or pull request, and a POST of the same
// JSON to the task's callback URL. Each sink throws an error that says whether a retry can help:
// a permanent one (a deleted issue, a 404 callback) must not keep a task open forever.
import { Context } from '@temporalio/activity';
import type { DroverConfig } from '../config';
import { durationMs } from '../config';
import { ForgejoApi, isPermanentStatus } from '../forgejo/api';
import type { Client } from '@temporalio/client';
import type { TaskStatus } from '../model';
import type { TaskEvent } from '../workflows/activity-types';
import { historyUrl, taskLinkKey, taskPageUrl } from '../task-links';
import { costEntry, costLedgerSink } from './cost';
import { describeInstance } from '../workflows/claim-rules';
import type { TaskEventSink } from './report';

/** The JSON every sink is built from: the comment renders it, the callback receives it. */
export interface TaskEventReport {
  event: TaskEvent['type'];
  /** Unique per task run, event and attempt: receivers can drop duplicates by it. */
  event_id: string;
  task_id: string;
  kind: string;
  agent_type: string;
  repo: string;
  number: number;
  title: string;
  state: string;
  mode: string;
  attempt: number;
  agent: { kind: 'host' | 'agent'; id: string } | null;
  outcome?: string;
  summary?: string;
  branch?: string;
  rev?: string;
  /** What the run cost and the tokens it used, as its agent CLI reported them. */
  cost_usd?: number;
  tokens?: { input: number; output: number; cache_read: number; cache_write: number };
  /** Why the task was cancelled, and by whom, as the cancel request said. */
  cancel_reason?: string;
  cancelled_by?: string;
  issue_url?: string;
  /** The task in the API (needs the admin token): for programs. */
  task_url: string;
  /** The task's read-only page, signed: for people (see src/task-links.ts). */
  page_url?: string;
  history_url?: string;
  at: string;
}

export interface ReportLinks {
  publicUrl: string;
  temporalUiUrl?: string;
  namespace: string;
  /** Signs the tasks' read-only page links (none: comments link to the API). */
  pageKey?: Buffer;
}

export function taskEventReport(event: TaskEvent, links: ReportLinks): TaskEventReport {
  const { status } = event;
  const holder = status.assignee ?? status.attempts.at(-1)?.holder;
  const base = links.publicUrl.replace(/\/+$/, '');
  const ui = links.temporalUiUrl?.replace(/\/+$/, '');
  return {
    event: event.type,
    // A closed task's id can be run again: the run id tells the runs apart.
    event_id: `${status.taskId}/${status.runId}/${event.type}/${status.attempt}`,
    task_id: status.taskId,
    kind: status.input.kind,
    agent_type: status.input.agentType,
    repo: status.input.repo,
    number: status.input.number,
    title: status.input.title,
    state: status.state,
    mode: status.mode,
    attempt: status.attempt,
    agent: holder ? { kind: holder.kind, id: holder.id } : null,
    ...(status.result
      ? {
          outcome: status.result.outcome,
          summary: status.result.summary,
          ...(status.result.branch ? { branch: status.result.branch } : {}),
          ...(status.result.rev ? { rev: status.result.rev } : {}),
          ...costFields(status),
        }
      : {}),
    ...(status.cancelRequested && status.cancelReason ? { cancel_reason: status.cancelReason } : {}),
    ...(status.cancelRequested && status.cancelledBy ? { cancelled_by: status.cancelledBy } : {}),
    ...(status.input.url ? { issue_url: status.input.url } : {}),
    task_url: `${base}/api/v1/tasks/${encodeURIComponent(status.taskId)}`,
    ...(links.pageKey ? { page_url: taskPageUrl(base, links.pageKey, status.taskId) } : {}),
    ...(ui ? { history_url: historyUrl(ui, links.namespace, status.taskId) } : {}),
    at: status.closedAt ?? status.updatedAt,
  };
}

/** A closed task's cost and tokens as reports show them (none when its CLI reported none). */
export function costFields(status: TaskStatus): Pick<TaskEventReport, 'cost_usd' | 'tokens'> {
  const entry = costEntry(status);
  if (!entry) return {};
  const { input, output, cacheRead, cacheWrite } = entry.tokens;
  return {
    ...(typeof status.result?.details?.costUsd === 'number' ? { cost_usd: entry.costUsd } : {}),
    ...(input + output + cacheRead + cacheWrite > 0 ? { tokens: { input, output, cache_read: cacheRead, cache_write: cacheWrite } } : {}),
  };
}

/** `$0.0123 · 12.3k tokens (1.2k in, 800 out, 10.3k cache)` */
export function describeCost(report: Pick<TaskEventReport, 'cost_usd' | 'tokens'>): string | undefined {
  const parts: string[] = [];
  if (report.cost_usd !== undefined) parts.push(`$${report.cost_usd < 1 ? report.cost_usd.toFixed(4) : report.cost_usd.toFixed(2)}`);
  if (report.tokens) {
    const t = report.tokens;
    const k = (n: number) => (n >= 1_000 ? `${(n / 1_000).toFixed(1)}k` : String(n));
    const cache = t.cache_read + t.cache_write;
    parts.push(`${k(t.input + t.output + cache)} tokens (${k(t.input)} in, ${k(t.output)} out${cache ? `, ${k(cache)} cache` : ''})`);
  }
  return parts.length ? parts.join(' · ') : undefined;
}

export function commentMarker(report: TaskEventReport): string {
  return `<!-- drover:${report.event_id} -->`;
}

const HEADLINES: Record<TaskEvent['type'], string> = {
  started: '🚀 started',
  succeeded: '✅ succeeded',
  forked: '🍴 forked',
  failed: '❌ failed',
  cancelled: '🛑 cancelled',
};

const code = (text: string) => `\`${text.replace(/[`\r\n]/g, '')}\``;
/** Untrusted text in a table cell: one line, no Markdown structure of its own. */
const quoteInline = (text: string) => {
  const line = text.replace(/[\r\n]+/g, ' ').slice(0, 500);
  return line.replace(/[\\`*_{}[\]()<>#+!|~-]/g, (c) => `\\${c}`);
};

/** The Markdown comment for one event. */
export function renderComment(report: TaskEventReport): string {
  const rows: Array<[string, string]> = [];
  if (report.agent) rows.push(['agent', `${describeInstance(report.agent)} (${code(report.agent_type)})`]);
  else rows.push(['agent type', code(report.agent_type)]);
  rows.push(['mode', code(report.mode)]);
  if (report.attempt > 0) rows.push(['attempt', String(report.attempt)]);
  if (report.outcome) rows.push(['outcome', report.outcome]);
  if (report.branch) rows.push(['branch', code(report.branch)]);
  if (report.rev) rows.push(['rev', code(report.rev)]);
  const cost = describeCost(report);
  if (cost) rows.push(['cost', cost]);
  if (report.cancel_reason) rows.push(['cancelled', `${quoteInline(report.cancel_reason)}${report.cancelled_by ? ` (by ${code(report.cancelled_by)})` : ''}`]);
  const links = [`[task](${report.page_url ?? report.task_url})`, ...(report.history_url ? [`[history](${report.history_url})`] : [])].join(' · ');
  const lines = [
    commentMarker(report),
    `**Drover** · ${report.kind} task ${code(report.task_id)} ${HEADLINES[report.event]} · ${links}`,
    '',
    '| | |',
    '| --- | --- |',
    ...rows.map(([k, v]) => `| ${k} | ${v} |`),
  ];
  if (report.summary) {
    const summary = report.summary.length > 4_000 ? `${report.summary.slice(0, 4_000)}…` : report.summary;
    lines.push('', '**Summary**', '', ...summary.split(/\r?\n/).map((line) => `> ${line}`));
  }
  return lines.join('\n');
}

/** Which try of the current activity this is; 1 outside an activity. */
export function activityAttempt(): number {
  try {
    return Context.current().info.attempt;
  } catch {
    return 1;
  }
}

/** An error from a sink that tells the activity whether retrying can help. */
export class SinkError extends Error {
  override readonly name = 'SinkError';
  constructor(
    message: string,
    readonly permanent: boolean,
  ) {
    super(message);
  }
}

export interface CommentSinkOptions {
  api: ForgejoApi;
  links: ReportLinks;
  /** Which retry of the delivery this is (1 = first try); later tries check for an earlier comment. */
  attempt?: () => number;
}

/** Comments on the task's issue or pull request; tasks without one are skipped. */
export function forgejoCommentSink(options: CommentSinkOptions): TaskEventSink {
  return async (event) => {
    const { repo, number } = event.status.input;
    if (!repo || !number) return;
    const report = taskEventReport(event, options.links);
    const marker = commentMarker(report);
    try {
      if ((options.attempt ?? activityAttempt)() > 1) {
        // An earlier try may have posted the comment and lost the answer: do not post it twice.
        const since = new Date(Date.parse(event.status.updatedAt) - 10 * 60_000).toISOString();
        const existing = await options.api.listComments(repo, number, since);
        if (existing.some((comment) => comment.body?.includes(marker))) return;
      }
      await options.api.createComment(repo, number, renderComment(report));
    } catch (error) {
      const permanent = (error as { permanent?: boolean }).permanent === true;
      throw new SinkError(`comment on ${repo}#${number}: ${(error as Error).message}`, permanent);
    }
  };
}

/** POSTs the event's JSON to the task's callback URL, if it has one. */
export function callbackSink(options: { links: ReportLinks; timeoutMs: number }): TaskEventSink {
  return async (event) => {
    const url = event.status.input.callbackUrl;
    if (!url) return;
    const report = taskEventReport(event, options.links);
    let response: Response;
    try {
      response = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'user-agent': 'drover', 'x-drover-event': report.event, 'x-drover-event-id': report.event_id },
        body: JSON.stringify(report),
        redirect: 'manual',
        signal: AbortSignal.timeout(options.timeoutMs),
      });
      await response.arrayBuffer().catch(() => undefined);
    } catch (error) {
      throw new SinkError(`callback ${url}: ${(error as Error).message}`, false);
    }
    if (response.ok) return;
    const permanent = (response.status >= 300 && response.status < 400) || isPermanentStatus(response.status);
    throw new SinkError(`callback ${url}: HTTP ${response.status}`, permanent);
  };
}

/** The sinks the config asks for: the Forgejo comment when forgejo.url and token are set; callbacks always; the cost ledger with a client. */
export function reportSinksFromConfig(config: DroverConfig, client?: Client): TaskEventSink[] {
  const links: ReportLinks = { publicUrl: config.api.publicUrl, temporalUiUrl: config.api.temporalUiUrl, namespace: config.temporal.namespace, pageKey: taskLinkKey(config) };
  const timeoutMs = durationMs(config.forgejo.timeout);
  const sinks: TaskEventSink[] = [];
  if (config.forgejo.url && config.forgejo.token) {
    sinks.push(forgejoCommentSink({ api: new ForgejoApi({ url: config.forgejo.url, token: config.forgejo.token, timeoutMs }), links }));
  }
  sinks.push(callbackSink({ links, timeoutMs }));
  // Costs go to the ledger that /metrics, stats and budgets read.
  if (client) sinks.push(costLedgerSink(client));
  return sinks;
}
