// Cost: each result's own cost and tokens reach the ledger workflow once, and show in /metrics,
// GET /api/v1/stats, the result comment, and the daily budgets checked at enqueue.
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { costEntry } from '../src/activities/cost';
import { describeCost, renderComment, taskEventReport } from '../src/activities/sinks';
import { budgetHold, costWindows, dailyBudget } from '../src/costs';
import type { TaskStatus } from '../src/model';
import { CostBook, COST_DAYS_KEPT, addDays, type CostEntry } from '../src/workflows/cost-book';
import { adminAuth, agent, dequeue, enqueue, startHarness, taskUrl, type Harness } from './support/http';
import { uniqueRepo, waitFor } from './support/temporal';

const entry = (over: Partial<CostEntry> = {}): CostEntry => ({
  key: 'k1',
  at: '2026-11-21T10:00:00.000Z',
  agentType: 'dev',
  repo: 'acme/web',
  provider: 'claude-code',
  costUsd: 0.25,
  tokens: { input: 100, output: 50, cacheRead: 1_000, cacheWrite: 10 },
  ...over,
});

describe('the cost book (pure)', () => {
  it('counts each run once, by day and labels, keeps all-time sums, and forgets days past the window', () => {
    const book = new CostBook();
    expect(book.record(entry())).toBe(true);
    expect(book.record(entry())).toBe(false); // a report delivered twice
    expect(book.record(entry({ key: 'k2', costUsd: 0.5, repo: 'acme/api' }))).toBe(true);
    expect(book.record(entry({ key: 'k3', at: '2026-11-20T23:59:59.000Z' }))).toBe(true);
    const state = book.snapshot();
    expect(Object.keys(state.days).sort()).toEqual(['2026-11-20', '2026-11-21']);
    const windows = costWindows(state, new Date('2026-11-21T12:00:00Z'));
    expect(windows.today).toMatchObject({ usd: 0.75, runs: 2, by_repo: { 'acme/web': { usd: 0.25 }, 'acme/api': { usd: 0.5 } }, by_type: { dev: { usd: 0.75, runs: 2 } } });
    expect(windows.today.tokens).toBe(2 * 1_160);
    expect(windows.last_30_days).toMatchObject({ usd: 1, runs: 3 });
    book.prune(addDays('2026-11-20', COST_DAYS_KEPT));
    expect(Object.keys(book.snapshot().days)).toEqual(['2026-11-21']);
    expect(Object.values(book.snapshot().allTime).reduce((sum, row) => sum + row.costUsd, 0)).toBe(1);
  });

  it('a daily budget holds new tasks of a repository once today’s spend reaches it, until the next UTC day', () => {
    const book = new CostBook();
    book.record(entry({ costUsd: 3 }));
    const now = new Date('2026-11-21T15:00:00Z');
    expect(dailyBudget({ '*': 10, 'acme/web': 2 }, 'acme/web')).toBe(2);
    expect(dailyBudget({ '*': 10 }, 'acme/api')).toBe(10);
    expect(dailyBudget({ constructor: 1 } as Record<string, number>, 'acme/x')).toBeUndefined();
    expect(budgetHold(book.snapshot(), { 'acme/web': 5 }, 'acme/web', now)).toBeUndefined();
    expect(budgetHold(book.snapshot(), { 'acme/web': 3 }, 'acme/web', now)).toEqual({
      reason: 'the daily budget of acme/web is spent ($3.00 of $3.00 today, UTC)',
      until: '2026-11-22T00:00:00.000Z',
    });
    expect(budgetHold(book.snapshot(), { 'acme/web': 3 }, 'acme/web', new Date('2026-11-22T00:00:01Z'))).toBeUndefined();
    expect(budgetHold(book.snapshot(), { 'acme/web': 3 }, 'acme/api', now)).toBeUndefined();
    // A budget of 0 allows nothing: every new task waits.
    expect(budgetHold(book.snapshot(), { 'acme/api': 0 }, 'acme/api', now)?.reason).toContain('$0.00 of $0.00');
  });

  it('a result’s cost and tokens make its ledger entry and its comment line; none when the CLI reported none', () => {
    const status = {
      taskId: 'implement:acme:web:1',
      runId: 'r1',
      state: 'completed',
      mode: 'ssh_cli',
      attempt: 1,
      attempts: [],
      updatedAt: '2026-11-21T10:00:00.000Z',
      closedAt: '2026-11-21T10:00:00.000Z',
      input: { agentType: 'dev', kind: 'implement', repo: 'acme/web', number: 1, title: 't', prompt: 'p' },
      result: { outcome: 'success', summary: 'done', details: { provider: 'claude-code', costUsd: 0.0123, tokens: { input: 1_200, output: 800, cacheRead: 10_000, cacheWrite: 300 } } },
    } as unknown as TaskStatus;
    expect(costEntry(status)).toMatchObject({ key: 'implement:acme:web:1/r1', costUsd: 0.0123, tokens: { input: 1_200, output: 800, cacheRead: 10_000, cacheWrite: 300 } });
    const report = taskEventReport({ type: 'succeeded', status }, { publicUrl: 'http://d', namespace: 'n' });
    expect(report).toMatchObject({ cost_usd: 0.0123, tokens: { input: 1_200, output: 800, cache_read: 10_000, cache_write: 300 } });
    expect(describeCost(report)).toBe('$0.0123 · 12.3k tokens (1.2k in, 800 out, 10.3k cache)');
    expect(renderComment(report)).toContain('| cost | $0.0123 · 12.3k tokens');
    expect(costEntry({ ...status, result: { outcome: 'success', summary: 'x', details: { provider: 'command' } } })).toBeUndefined();
  });
});

describe('cost through Drover', () => {
  let h: Harness;
  let app: FastifyInstance;
  const A = agent('cost-agent', ['dev']);
  beforeAll(async () => {
    h = await startHarness({ agents: [{ id: A.id, token: A.token, types: ['dev'] }], budgets: { dailyUsd: { 'acme/spent': 0.5 } } });
    await h.startWorker();
    app = await h.app();
  });
  afterAll(async () => {
    await h?.close();
  });

  it('a completed run’s cost reaches /metrics and GET /api/v1/stats, once; a spent budget leaves a new task pending with the reason', async () => {
    const repo = uniqueRepo();
    const run = async (number: number, targetRepo: string, costUsd: number) => {
      const taskId = await enqueue(app, { agent_type: 'dev', kind: 'implement', repo: targetRepo, number, title: 'costly', prompt: 'p' });
      const got = await dequeue(app, A, 10);
      expect(got.json().task_id).toBe(taskId);
      const done = await app.inject({
        method: 'POST',
        url: taskUrl(taskId, 'complete'),
        headers: A.auth,
        payload: { agent_id: A.id, attempt: 1, summary: 'done', details: { provider: 'claude-code', costUsd, tokens: { input: 10, output: 5, cacheRead: 0, cacheWrite: 0 } } },
      });
      expect(done.statusCode, done.body).toBe(200);
      await h.tasks.result(taskId);
      return taskId;
    };
    await run(1, repo, 0.25);
    await run(2, repo, 0.5);
    const stats = await waitFor(async () => {
      const answer = (await app.inject({ method: 'GET', url: '/api/v1/stats', headers: adminAuth })).json();
      return answer.cost?.today?.by_repo?.[repo]?.runs === 2 ? answer : undefined;
    }, 'the costs in stats');
    expect(stats.cost.today.by_repo[repo]).toEqual({ usd: 0.75, tokens: 30, runs: 2 });
    expect(stats.cost.last_30_days.by_repo[repo].usd).toBe(0.75);
    const metrics = await waitFor(async () => {
      const text = (await app.inject({ method: 'GET', url: '/metrics' })).body;
      return text.includes(`repo="${repo}"`) ? text : undefined;
    }, 'the costs in /metrics');
    expect(metrics).toContain(`drover_agent_cost_usd_total{type="dev",repo="${repo}",provider="claude-code"} 0.75`);
    expect(metrics).toContain(`drover_agent_tokens_total{type="dev",repo="${repo}",provider="claude-code",kind="input"} 20`);

    // acme/spent has a budget of $0.50 a day: once it is spent, new tasks wait for the next day.
    await run(3, 'acme/spent', 0.5);
    await waitFor(async () => ((await app.inject({ method: 'GET', url: '/api/v1/stats', headers: adminAuth })).json().cost?.today?.by_repo?.['acme/spent'] ? true : undefined), 'the spend of acme/spent');
    const held = await enqueue(app, { agent_type: 'dev', kind: 'implement', repo: 'acme/spent', number: 4, title: 'over budget', prompt: 'p' });
    const view = (await app.inject({ method: 'GET', url: taskUrl(held), headers: adminAuth })).json();
    expect(view).toMatchObject({ state: 'pending', hold: { reason: expect.stringContaining('daily budget of acme/spent is spent'), until: expect.stringMatching(/T00:00:00.000Z$/) } });
    const none = await dequeue(app, A, 1);
    expect(none.statusCode).toBe(204);
    await h.tasks.cancel(held);
  });
});
