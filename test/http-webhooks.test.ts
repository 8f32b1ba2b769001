// Forgejo deliveries over HTTP against the real dev server: each mapped event makes the right task;
// bad signatures start nothing; redelivery finds the open task; events that make no task say why.
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { FakeForgejo } from './support/fake-forgejo';
import { capturedAnswer, capturedDelivery, capturedReviewComment, commitStatus, forgejoRequest, issueAssigned, reviewed, reviewRequested, type Delivery } from './support/forgejo-fixtures';
import { FORGEJO_TOKEN, SECRET, startHarness, type Harness } from './support/http';
import { uniqueRepo } from './support/temporal';

let h: Harness;
let app: FastifyInstance;
let forgejo: FakeForgejo;

beforeAll(async () => {
  forgejo = await FakeForgejo.start();
  h = await startHarness({ forgejo: { url: forgejo.url, token: FORGEJO_TOKEN } });
  await h.startWorker();
  app = await h.app();
});
afterAll(async () => {
  await h?.close();
  await forgejo?.close();
});

function deliver(delivery: Delivery, opts: { secret?: string; signature?: string | null; id?: string } = {}) {
  const { body, headers } = forgejoRequest(delivery, opts.secret ?? SECRET, opts);
  return app.inject({ method: 'POST', url: '/api/v1/webhooks/forgejo', headers, payload: body });
}

async function expectNoTask(repo: string): Promise<void> {
  // Visibility is immediate on the dev server's SQLite store, and nothing else writes this repo.
  expect(await h.tasks.count({ repo })).toBe(0);
}

describe('each mapped event makes the right task', () => {
  test('issue assigned to the dev login → implement for dev, prompt from the issue', async () => {
    const repo = uniqueRepo();
    const res = await deliver(issueAssigned(repo, 42, ['bob', 'drover-dev'], { title: 'Add dark mode', body: 'Users want a dark theme.' }));
    expect(res.statusCode).toBe(202);
    const answer = res.json();
    expect(answer).toMatchObject({ status: 'created', created: true, kind: 'implement', agent_type: 'dev', event: 'issues' });
    expect(answer.task_id).toBe(`implement:${repo.replace('/', ':')}:42:dev`);
    const status = await h.tasks.status(answer.task_id);
    expect(status.state).toBe('pending');
    expect(status.input).toMatchObject({ agentType: 'dev', kind: 'implement', repo, number: 42, title: 'Add dark mode', url: `https://forgejo.example/${repo}/issues/42` });
    expect(status.input.prompt).toContain('Add dark mode');
    expect(status.input.prompt).toContain('Users want a dark theme.');
    expect(status.input.prompt).toContain(`https://forgejo.example/${repo}/issues/42`);
    // The workspace clones the repository from the configured Forgejo, at its default branch.
    expect(status.input.checkout).toEqual({ remote: `${forgejo.url}/${repo}.git`, base: 'main' });
    // The config's task defaults travel with the task.
    expect(status.options.matchWindowMs).toBe(60_000);
    expect(status.options.leaseMs).toBe(30_000);
  });

  test('a second agent-type assignee starts a task for that type only (real Gitea deliveries; the timeline tells who was added)', async () => {
    // Captured from Gitea 1.27.3: drover-dev assigned, then drover-boss added. The second payload
    // lists both and still names drover-dev as `issue.assignee`.
    const first = await deliver(capturedDelivery('issue-assigned-dev'));
    expect(first.statusCode, first.body).toBe(202);
    expect(first.json()).toMatchObject({ created: true, agent_type: 'dev', task_id: 'implement:drover-boss:widgets:1:dev' });
    const timeline = capturedAnswer<Array<{ type: string; removed_assignee: boolean }>>('issue-timeline');
    // What the timeline held when the second delivery was sent: the two additions (the capture
    // went on to unassign drover-dev afterwards).
    forgejo.timelines.set('drover-boss/widgets#1', timeline.filter((e) => e.type === 'assignees' && !e.removed_assignee));
    // Whatever order the server lists the assignees in: the timeline decides.
    const secondDelivery = capturedDelivery('issue-assigned-second-boss');
    const payload = secondDelivery.payload as { issue: { assignees: unknown[] } };
    payload.issue.assignees.reverse();
    const second = await deliver(secondDelivery);
    expect(second.statusCode, second.body).toBe(202);
    expect(second.json()).toMatchObject({ created: true, agent_type: 'boss', task_id: 'implement:drover-boss:widgets:1:boss' });
    expect((await h.tasks.status('implement:drover-boss:widgets:1:dev')).state).toBe('pending'); // not run again
    for (const id of ['implement:drover-boss:widgets:1:dev', 'implement:drover-boss:widgets:1:boss']) await h.tasks.cancel(id);
  });

  test('review requested from the reviewer login → review for reviewer', async () => {
    const repo = uniqueRepo();
    const res = await deliver(reviewRequested(repo, 7, 'drover-reviewer', { title: 'Dark mode', head: 'dark-mode', sha: 'd'.repeat(40) }));
    expect(res.statusCode).toBe(202);
    expect(res.json()).toMatchObject({ kind: 'review', agent_type: 'reviewer' });
    const status = await h.tasks.status(res.json().task_id);
    expect(status.input).toMatchObject({ kind: 'review', agentType: 'reviewer', number: 7 });
    // The reviewer's workspace is the pull request's head at the event's sha.
    expect(status.input.checkout).toMatchObject({ remote: `${forgejo.url}/${repo}.git`, branch: 'dark-mode', sha: 'd'.repeat(40) });
    expect(status.input.prompt).toContain('dark-mode');
    expect(status.input.prompt).toContain('d'.repeat(40));
  });

  test('review requesting changes → address_review for the author’s type, with the review text and inline comments', async () => {
    const repo = uniqueRepo();
    forgejo.reviews.set(`${repo}#9`, [
      { id: 301, state: 'APPROVED', body: 'old', user: { login: 'drover-reviewer' }, submitted_at: '2026-03-01T00:00:00Z' },
      { id: 302, state: 'REQUEST_CHANGES', body: 'needs work', user: { login: 'drover-reviewer' }, submitted_at: '2026-03-04T00:00:00Z' },
    ]);
    // As the real server answers: `position` (the new file's line), `original_position` (the old one's), no `line`.
    forgejo.reviewComments.set(302, [
      capturedReviewComment({ body: 'rename this variable', path: 'src/theme.ts', position: 12 }),
      capturedReviewComment({ body: 'why was this removed?', path: 'src/old.ts', position: 0, original_position: 7 }),
    ]);
    const res = await deliver(reviewed(repo, 9, 'rejected', 'drover-reviewer', 'Please handle the contrast ratio.', { author: 'drover-dev', head: 'dark-mode' }));
    expect(res.statusCode).toBe(202);
    expect(res.json()).toMatchObject({ kind: 'address_review', agent_type: 'dev', event: 'pull_request_rejected' });
    const { input } = await h.tasks.status(res.json().task_id);
    expect(input.prompt).toContain('Please handle the contrast ratio.');
    expect(input.prompt).toContain('src/theme.ts:12: rename this variable');
    expect(input.prompt).toContain('src/old.ts:7 (old): why was this removed?');
    expect(input.prompt).toContain('drover-reviewer requested changes');
  });

  test('review approving → merge for boss', async () => {
    const repo = uniqueRepo();
    const res = await deliver(reviewed(repo, 11, 'approved', 'drover-reviewer', 'LGTM'));
    expect(res.statusCode).toBe(202);
    expect(res.json()).toMatchObject({ kind: 'merge', agent_type: 'boss', task_id: `merge:${repo.replace('/', ':')}:11:boss` });
  });

  test('commit status failure on an open PR head → fix_ci for the PR author’s type, found through the Forgejo API', async () => {
    const repo = uniqueRepo();
    const sha = 'e'.repeat(40);
    forgejo.pulls.set(repo, [
      // a page of other pull requests first
      ...Array.from({ length: 50 }, (_, i) => ({ number: 100 + i, title: `other ${i}`, state: 'open' as const, user: { login: 'bob' }, head: { ref: `b${i}`, sha: String(i).padStart(40, '0') }, base: { ref: 'main' } })),
      { number: 5, title: 'Dark mode', state: 'open', html_url: `https://forgejo.example/${repo}/pulls/5`, user: { login: 'drover-dev' }, head: { ref: 'dark-mode', sha }, base: { ref: 'main' } },
    ]);
    const res = await deliver(commitStatus(repo, sha, 'failure', 'ci/unit'));
    expect(res.statusCode).toBe(202);
    expect(res.json()).toMatchObject({ kind: 'fix_ci', agent_type: 'dev', task_id: `fix_ci:${repo.replace('/', ':')}:5:dev` });
    const { input } = await h.tasks.status(res.json().task_id);
    expect(input.prompt).toContain('ci/unit');
    expect(input.prompt).toContain('tests failed: 3 of 120');
    expect(input.prompt).toContain(`https://ci.example/${repo}/runs/9`);
    // an `error` status on the same head finds the same open task
    const again = await deliver(commitStatus(repo, sha, 'error', 'ci/lint'));
    expect(again.statusCode).toBe(202);
    expect(again.json()).toMatchObject({ task_id: res.json().task_id, created: false });
  });

  test('Gitea deliveries (X-Gitea-* headers only) and form-encoded deliveries are understood', async () => {
    const repo = uniqueRepo();
    const delivery = issueAssigned(repo, 3, ['drover-dev']);
    const { body, headers } = forgejoRequest(delivery, SECRET);
    const giteaOnly = Object.fromEntries(Object.entries(headers).filter(([k]) => !k.startsWith('x-forgejo') && !k.startsWith('x-gogs')));
    const res = await app.inject({ method: 'POST', url: '/api/v1/webhooks/forgejo', headers: giteaOnly, payload: body });
    expect(res.statusCode).toBe(202);

    const repo2 = uniqueRepo();
    const form = forgejoRequest(issueAssigned(repo2, 4, ['drover-dev']), SECRET);
    const res2 = await app.inject({
      method: 'POST',
      url: '/api/v1/webhooks/forgejo',
      headers: { ...form.headers, 'content-type': 'application/x-www-form-urlencoded' },
      payload: new URLSearchParams({ payload: form.body }).toString(),
    });
    expect(res2.statusCode).toBe(202);
    expect(res2.json().task_id).toBe(`implement:${repo2.replace('/', ':')}:4:dev`);
  });
});

describe('signatures', () => {
  test('unsigned, badly signed and wrongly keyed deliveries get 401 and start nothing', async () => {
    const repo = uniqueRepo();
    const delivery = issueAssigned(repo, 1, ['drover-dev']);
    const unsigned = await deliver(delivery, { signature: null });
    expect(unsigned.statusCode).toBe(401);
    expect(unsigned.json()).toMatchObject({ code: 'bad_signature' });
    const garbage = await deliver(delivery, { signature: 'not-hex' });
    expect(garbage.statusCode).toBe(401);
    const wrongKey = await deliver(delivery, { secret: 'another-secret' });
    expect(wrongKey.statusCode).toBe(401);
    expect(wrongKey.json().code).toBe('bad_signature');
    // A signature over a different body (tampered payload).
    const { headers } = forgejoRequest(delivery, SECRET);
    const tampered = JSON.stringify({ ...(delivery.payload as object), number: 2 }, null, 2);
    const res = await app.inject({ method: 'POST', url: '/api/v1/webhooks/forgejo', headers, payload: tampered });
    expect(res.statusCode).toBe(401);
    await expectNoTask(repo);
  });

  test('unsigned deliveries cannot grow the metrics: event labels are a fixed few', async () => {
    for (let i = 0; i < 20; i++) {
      const res = await app.inject({
        method: 'POST',
        url: '/api/v1/webhooks/forgejo',
        headers: { 'content-type': 'application/json', 'x-forgejo-event': `made_up_${'abcdefghijklmnopqrst'[i]}`, 'x-forgejo-signature': 'a'.repeat(64) },
        payload: '{}',
      });
      expect(res.statusCode).toBe(401);
    }
    const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
    const labels = new Set([...metrics.matchAll(/^drover_webhooks_total\{event="([^"]*)"/gm)].map((m) => m[1]));
    expect(labels.has('other')).toBe(true);
    for (const label of labels) expect(['issues', 'pull_request', 'pull_request_approved', 'pull_request_rejected', 'status', 'other']).toContain(label);
  });
});

describe('idempotence and events that make no task', () => {
  test('redelivery of the same delivery is a duplicate (200), and so is a replay under a new delivery id after its task closed; a repeated event returns the open task with 202', async () => {
    const repo = uniqueRepo();
    const delivery = issueAssigned(repo, 8, ['drover-dev']);
    const first = await deliver(delivery, { id: 'delivery-1' });
    const redelivered = await deliver(delivery, { id: 'delivery-1' });
    const repeated = await deliver(issueAssigned(repo, 8, ['drover-dev', 'carol']), { id: 'delivery-2' });
    expect([first.statusCode, redelivered.statusCode, repeated.statusCode]).toEqual([202, 200, 202]);
    expect(first.json().created).toBe(true);
    const taskId = first.json().task_id as string;
    expect(redelivered.json()).toMatchObject({ status: 'duplicate', task_id: taskId, delivery: 'delivery-1' });
    expect(repeated.json()).toMatchObject({ created: false, task_id: taskId });
    expect(await h.tasks.count({ repo })).toBe(1);
    // Gitea's "Replay" after the task closed: the same body under a new delivery id (as captured
    // from Gitea 1.27.3). Still that delivery: no second run.
    await h.tasks.cancel(taskId);
    await h.tasks.result(taskId);
    const replayed = await deliver(delivery, { id: 'delivery-1-replayed' });
    expect(replayed.statusCode).toBe(200);
    expect(replayed.json()).toMatchObject({ status: 'duplicate', task_id: taskId });
    expect(await h.tasks.count({ repo })).toBe(1);
  });

  test('events and actions that make no task answer 200 with the reason', async () => {
    const repo = uniqueRepo();
    const opened = issueAssigned(repo, 1, ['drover-dev']);
    (opened.payload as { action: string }).action = 'opened';
    opened.eventType = 'issues';
    const cases: Array<[Delivery, RegExp]> = [
      [opened, /issue action opened/],
      [commitStatus(repo, 'f'.repeat(40), 'success'), /commit status success/],
      [commitStatus(repo, 'f'.repeat(40), 'failure'), /not the head of an open pull request/],
      [{ event: 'push', eventType: 'push', payload: { ref: 'refs/heads/main', repository: { full_name: repo } } }, /event push makes no task/],
      [issueAssigned(repo, 2, ['drover-dev'], { state: 'closed' }), /closed/],
      [reviewRequested(repo, 3, 'drover-reviewer', { state: 'closed', merged: true }), /closed/],
      [issueAssigned(repo, 4, []), /no assignee/],
    ];
    for (const [delivery, reason] of cases) {
      const res = await deliver(delivery);
      expect(res.statusCode, JSON.stringify(res.json())).toBe(200);
      expect(res.json().status).toBe('ignored');
      expect(res.json().reason).toMatch(reason);
    }
    await expectNoTask(repo);
  });

  test('a user who is no agent type is human activity: 200 ignored, naming them (or 422 with unknownLogins: reject)', async () => {
    const repo = uniqueRepo();
    const human = await deliver(reviewRequested(repo, 3, 'alice'));
    expect(human.statusCode).toBe(200);
    expect(human.json()).toMatchObject({ status: 'ignored' });
    expect(human.json().reason).toContain('alice');
    const humanAuthor = await deliver(reviewed(repo, 4, 'rejected', 'drover-reviewer', 'no', { author: 'bob' }));
    expect(humanAuthor.statusCode).toBe(200);
    expect(humanAuthor.json().reason).toContain('bob');
    await expectNoTask(repo);

    const strict = await h.app({ config: { ...h.config, webhook: { ...h.config.webhook, unknownLogins: 'reject' } } });
    const deliverStrictly = (delivery: Parameters<typeof forgejoRequest>[0]) => {
      const { body, headers } = forgejoRequest(delivery, SECRET);
      return strict.inject({ method: 'POST', url: '/api/v1/webhooks/forgejo', headers, payload: body });
    };
    const res = await deliverStrictly(reviewRequested(repo, 3, 'mallory'));
    expect(res.statusCode).toBe(422);
    expect(res.json()).toMatchObject({ code: 'unknown_agent_type', login: 'mallory', role: 'requested reviewer' });
    expect(res.json().message).toContain('mallory');
    // Forgejo users may be called anything, Object.prototype's member names included.
    for (const login of ['constructor', '__proto__', 'toString']) {
      const odd = await deliverStrictly(issueAssigned(repo, 5, [login]));
      expect(odd.statusCode, login).toBe(422);
      expect(odd.json()).toMatchObject({ code: 'unknown_agent_type', login });
    }
    await expectNoTask(repo);
  });

  test('Forgejo unreachable while looking up a commit’s pull request → 502, nothing started', async () => {
    const repo = uniqueRepo();
    forgejo.mode = 'down';
    try {
      const res = await deliver(commitStatus(repo, '1'.repeat(40), 'failure'));
      expect(res.statusCode).toBe(502);
      expect(res.json().code).toBe('forgejo_unavailable');
    } finally {
      forgejo.mode = 'up';
    }
    await expectNoTask(repo);
  });
});
