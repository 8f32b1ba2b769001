// Unit tests of the HTTP face's pure parts: signatures, prompt templates and their config checks,
// comment rendering, and how report failures are classified (permanent vs. retry).
import { ApplicationFailure } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createReportActivities } from '../src/activities/report';
import { callbackSink, renderComment, SinkError, taskEventReport } from '../src/activities/sinks';
import { parseConfig } from '../src/config';
import { classify, signBody, typeOfLogin, verifySignature } from '../src/forgejo/events';
import { DEFAULT_TASK_OPTIONS, type TaskStatus } from '../src/model';
import { checkPromptTemplates, renderPrompt } from '../src/prompts';
import type { TaskEvent } from '../src/workflows/activity-types';
import { FakeForgejo } from './support/fake-forgejo';

function status(overrides: Partial<TaskStatus> = {}): TaskStatus {
  return {
    taskId: 'implement:acme:web:42',
    runId: 'run-1',
    input: { agentType: 'dev', kind: 'implement', repo: 'acme/web', number: 42, title: 'Dark mode', prompt: 'p', url: 'https://forgejo.example/acme/web/issues/42' },
    options: DEFAULT_TASK_OPTIONS,
    state: 'completed',
    mode: 'http_pull',
    assignee: { kind: 'agent', id: 'a1' },
    attempt: 1,
    lostAttempts: 0,
    cancelRequested: false,
    createdAt: '2026-03-04T10:00:00.000Z',
    updatedAt: '2026-03-04T10:10:00.000Z',
    closedAt: '2026-03-04T10:10:00.000Z',
    result: { outcome: 'success', summary: 'Added it\nwith two lines', branch: 'dark`mode', rev: 'abc1234' },
    attempts: [],
    ...overrides,
  };
}

describe('signatures', () => {
  const body = Buffer.from('{"action":"assigned"}');
  test('hex HMAC-SHA256 of the raw body, as Forgejo signs it', () => {
    const good = signBody('s3cret', body);
    expect(verifySignature('s3cret', body, good)).toBe(true);
    expect(verifySignature('s3cret', body, good.toUpperCase())).toBe(true);
    expect(verifySignature('s3cret', body, `sha256=${good}`)).toBe(true);
    expect(verifySignature('other', body, good)).toBe(false);
    expect(verifySignature('s3cret', Buffer.from('{"action":"opened"}'), good)).toBe(false);
    expect(verifySignature('s3cret', body, good.slice(0, 63))).toBe(false);
    expect(verifySignature('s3cret', body, undefined)).toBe(false);
    expect(verifySignature('s3cret', body, 'zz'.repeat(32))).toBe(false);
  });

  test('events are classified by event type first, then event', () => {
    expect(classify({ event: 'issues', eventType: 'issue_assign' })).toBe('issues');
    expect(classify({ event: 'pull_request', eventType: 'pull_request_review_request' })).toBe('pull_request');
    expect(classify({ event: 'pull_request', eventType: 'pull_request_assign' })).toBe('pull_request_assign');
    expect(classify({ event: 'pull_request_approved' })).toBe('pull_request_approved');
    expect(classify({ event: 'pull_request_rejected', eventType: 'pull_request_review_rejected' })).toBe('pull_request_rejected');
    expect(classify({ eventType: 'status' })).toBe('status');
    expect(classify({})).toBe('');
  });

  test('logins map to types through the config, case-insensitively, or by their own name', () => {
    const config = { types: ['dev', 'boss'], logins: { 'Drover-Dev': 'dev' }, prompts: {}, webhook: { mergeType: 'boss' } };
    expect(typeOfLogin(config, 'drover-dev')).toBe('dev');
    expect(typeOfLogin(config, 'Boss')).toBe('boss');
    expect(typeOfLogin(config, 'alice')).toBeUndefined();
  });

  test('logins named like Object.prototype members are no agent type', () => {
    const config = parseConfig({ types: ['dev', 'boss'], logins: { 'drover-dev': 'dev' } }, {});
    for (const name of ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf']) expect(typeOfLogin(config, name), name).toBeUndefined();
  });
});

describe('prompt templates', () => {
  test('render placeholders, leave no code path for payload text', () => {
    const out = renderPrompt('implement', { number: 42, repo: 'acme/web', title: '$(rm -rf /)', body: '{{title}}', url: 'u' }, {});
    expect(out).toContain('Implement issue #42 of acme/web: $(rm -rf /)');
    expect(out).toContain('{{title}}'); // substituted text is not expanded again
    expect(renderPrompt('custom', { title: 'T' }, { custom: 'Do {{title}} in {{repo}}.' })).toBe('Do T in .');
  });

  test('the config names bad template keys and placeholders', () => {
    expect(checkPromptTemplates({ implement: 'ok {{title}}', nonsense: 'x', review: '{{titel}}' })).toEqual([
      expect.stringContaining('prompts.nonsense: unknown task kind'),
      expect.stringContaining('prompts.review: unknown placeholder {{titel}}'),
    ]);
    expect(() => parseConfig({ prompts: { merge: 'Merge {{branchh}}' } }, {})).toThrow(/prompts\.merge: unknown placeholder/);
    expect(() => parseConfig({ webhook: { mergeType: 'ghost' } }, {})).toThrow(/webhook\.mergeType: unknown agent type ghost/);
    expect(() => parseConfig({ webhook: { unknownLogins: 'sometimes' } }, {})).toThrow(/webhook\.unknownLogins/);
    expect(() => parseConfig({ api: { dequeuePollInterval: 'often' } }, {})).toThrow(/api\.dequeuePollInterval/);
  });
});

describe('reports', () => {
  const links = { publicUrl: 'https://drover.example/', temporalUiUrl: 'http://ui:8233', namespace: 'default' };

  test('the comment names agent, mode, summary, branch, rev and links to the task', () => {
    const report = taskEventReport({ type: 'succeeded', status: status() }, links);
    expect(report).toMatchObject({ event: 'succeeded', event_id: 'implement:acme:web:42/run-1/succeeded/1', agent: { kind: 'agent', id: 'a1' }, branch: 'dark`mode' });
    const comment = renderComment(report);
    expect(comment.split('\n')[0]).toBe('<!-- drover:implement:acme:web:42/run-1/succeeded/1 -->');
    expect(comment).toContain('pull agent a1');
    expect(comment).toContain('`http_pull`');
    expect(comment).toContain('`darkmode`'); // backticks cannot break out of code spans
    expect(comment).toContain('`abc1234`');
    expect(comment).toContain('> Added it\n> with two lines');
    expect(comment).toContain('[task](https://drover.example/api/v1/tasks/implement%3Aacme%3Aweb%3A42)');
    expect(comment).toContain('[history](http://ui:8233/namespaces/default/workflows/implement%3Aacme%3Aweb%3A42)');
  });

  test('a run of the same task id again has other event ids; a cancel shows its reason, escaped, and who asked', () => {
    const again = taskEventReport({ type: 'succeeded', status: status({ runId: 'run-2' }) }, links);
    expect(again.event_id).not.toBe(taskEventReport({ type: 'succeeded', status: status() }, links).event_id);
    const cancelled = status({ state: 'cancelled', result: undefined, cancelRequested: true, cancelReason: 'wrong repo\n# <b>[x](y)</b>', cancelledBy: 'api' });
    const report = taskEventReport({ type: 'cancelled', status: cancelled }, links);
    expect(report).toMatchObject({ cancel_reason: 'wrong repo\n# <b>[x](y)</b>', cancelled_by: 'api' });
    const row = renderComment(report).split('\n').find((line) => line.startsWith('| cancelled |'));
    expect(row).toBe('| cancelled | wrong repo \\# \\<b\\>\\[x\\]\\(y\\)\\</b\\> (by `api`) |');
  });

  test('permanent failures give up, transient ones retry, and every sink gets its try', async () => {
    const event: TaskEvent = { type: 'started', status: status() };
    const calls: string[] = [];
    const ok = async () => void calls.push('ok');
    const gone = async () => {
      calls.push('gone');
      throw new SinkError('404', true);
    };
    const down = async () => {
      calls.push('down');
      throw new SinkError('503', false);
    };
    const failure = async (sinks: Array<() => Promise<void>>) => {
      try {
        await createReportActivities(sinks).reportTaskEvent(event);
        return undefined;
      } catch (error) {
        return error as ApplicationFailure;
      }
    };
    expect(await failure([ok, ok])).toBeUndefined();
    const permanent = await failure([gone, ok]);
    expect(permanent).toBeInstanceOf(ApplicationFailure);
    expect(permanent!.nonRetryable).toBe(true);
    const transient = await failure([down, gone, ok]);
    expect(transient!.nonRetryable).toBe(false);
    expect(calls.slice(-3)).toEqual(['down', 'gone', 'ok']);
  });

  describe('callback answers', () => {
    let server: FakeForgejo;
    beforeAll(async () => {
      server = await FakeForgejo.start();
    });
    afterAll(async () => server?.close());

    test('2xx delivers; 404 and redirects are permanent; 408, 429 and 5xx retry', async () => {
      const sink = callbackSink({ links, timeoutMs: 2_000 });
      const send = async (code: number) => {
        const path = `/callback/c${code}`;
        server.callbackStatus.set(path, code);
        try {
          await sink({ type: 'succeeded', status: status({ input: { ...status().input, callbackUrl: `${server.url}${path}` } }) });
          return 'delivered';
        } catch (error) {
          return (error as SinkError).permanent ? 'permanent' : 'retry';
        }
      };
      expect(await send(200)).toBe('delivered');
      expect(await send(204)).toBe('delivered');
      expect(await send(404)).toBe('permanent');
      expect(await send(410)).toBe('permanent');
      expect(await send(302)).toBe('permanent');
      expect(await send(408)).toBe('retry');
      expect(await send(429)).toBe('retry');
      expect(await send(500)).toBe('retry');
      expect(await send(503)).toBe('retry');
      const unreachable = callbackSink({ links, timeoutMs: 500 });
      await expect(unreachable({ type: 'started', status: status({ input: { ...status().input, callbackUrl: 'http://127.0.0.1:9/cb' } }) })).rejects.toMatchObject({ permanent: false });
      const body = server.callbacks('/callback/c200')[0]!.body;
      expect(body).toMatchObject({ event: 'succeeded', task_id: 'implement:acme:web:42', summary: 'Added it\nwith two lines', task_url: 'https://drover.example/api/v1/tasks/implement%3Aacme%3Aweb%3A42' });
    });
  });
});

describe('task pages (pure)', () => {
  test('every value is escaped; signatures are per task and per key', async () => {
    const { renderTaskPage } = await import('../src/api/pages');
    const { taskLinkKey, taskLinkSignature, verifyTaskLink } = await import('../src/task-links');
    const hostile = '<script>alert(1)</script>"\'&';
    const status = {
      taskId: 'implement:acme:web:1:dev', runId: 'r', state: 'completed', mode: 'http_pull', attempt: 1, lostAttempts: 0, cancelRequested: false,
      createdAt: 'c', updatedAt: 'u', options: {}, attempts: [{ attempt: 1, holder: { kind: 'agent', id: hostile }, mode: 'http_pull', claimedAt: 'x', end: 'completed', reason: hostile }],
      input: { agentType: 'dev', kind: 'implement', repo: 'acme/web', number: 1, title: hostile, prompt: 'SECRET PROMPT' },
      result: { outcome: 'success', summary: hostile, branch: hostile, details: { callbackToken: 'nope' } },
    } as unknown as Parameters<typeof renderTaskPage>[0];
    const html = renderTaskPage(status, { historyUrl: `http://ui/${hostile}` });
    expect(html).not.toContain('<script>');
    expect(html).toContain('&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;');
    expect(html).not.toContain('SECRET PROMPT');
    expect(html).not.toContain('nope');
    const key = taskLinkKey({ api: { linkSecret: 'a-link-secret-of-16+' }, webhook: {} } as never)!;
    const other = taskLinkKey({ api: {}, webhook: { secret: 'another-secret' } } as never)!;
    expect(verifyTaskLink(key, 't1', taskLinkSignature(key, 't1'))).toBe(true);
    expect(verifyTaskLink(key, 't2', taskLinkSignature(key, 't1'))).toBe(false);
    expect(verifyTaskLink(other, 't1', taskLinkSignature(key, 't1'))).toBe(false);
    expect(verifyTaskLink(key, 't1', undefined)).toBe(false);
    expect(taskLinkKey({ api: {}, webhook: {} } as never)).toBeUndefined();
  });
});
