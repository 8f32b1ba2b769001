// Generated bad input at every endpoint: malformed JSON, wrong types, oversized bodies, unknown ids,
// bad tokens, bad signatures and hostile strings. Every answer must be a 4xx with a stable error
// code; the app must stay healthy; no task may be made, lost or changed.
import { createHmac } from 'node:crypto';
import type { FastifyInstance, InjectOptions } from 'fastify';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { TaskStatus } from '../src/model';
import { forgejoRequest, issueAssigned, reviewed, reviewRequested } from './support/forgejo-fixtures';
import { adminAuth, agent, dequeue, enqueue, SECRET, startHarness, taskUrl, type Harness } from './support/http';

const A1 = agent('a1', ['dev']);
const A2 = agent('a2', ['dev']);
const BODY_LIMIT = 64 * 1024;

const STABLE_CODES = new Set([
  'bad_request',
  'bad_json',
  'body_too_large',
  'unsupported_media_type',
  'bad_url',
  'route_not_found',
  'unauthorized',
  'bad_token',
  'too_many_auth_failures',
  'task_not_found',
  'task_closed',
  'task_not_pending',
  'task_not_running',
  'wrong_agent_type',
  'reserved_for_other',
  'not_lease_holder',
  'stale_attempt',
  'agent_not_found',
  'agent_exists',
  'agent_from_config',
  'agent_idle',
  'execution_mode_mismatch',
  'unknown_agent_type',
  'bad_signature',
  'bad_payload',
  'bad_page_token',
]);

const HOSTILE = [
  "' OR 1=1 --",
  '"; DROP TABLE tasks; --',
  '$(rm -rf /)',
  '`id`',
  '; shutdown -h now',
  '<script>alert(1)</script>',
  '\u0000\u0001\u001f',
  '{{title}}{{body}}',
  '${HOME}${DROVER_ADMIN_TOKEN}',
  '../../../../etc/passwd',
  '%00%2e%2e%2f',
  '\ud800',
  '\r\nX-Injected: yes',
  'ＡＢＣ🙂\u202e',
  '__proto__',
  'constructor',
  ' ',
  '',
  'a'.repeat(10_000),
];

const WRONG_TYPES: unknown[] = [null, true, 0, -1, 1.5, 1e308, -1e308, 2 ** 53 + 1, 'x', '', [], [1, 'a'], {}, { nested: { deeper: [null] } }];

const MALFORMED_JSON = [
  '{',
  '{"agent_id": "a1",}',
  '{"agent_id": a1}',
  "{'agent_id': 'a1'}",
  '[1, 2',
  'nul',
  'undefined',
  '\u0000',
  '{"a": "\\x41"}',
  '[' .repeat(5_000) + ']'.repeat(5_000),
];

/** Well-formed JSON of the wrong shape. */
const WRONG_SHAPE_JSON = ['{"__proto__": {"admin": true}}', '"just a string"', '12345', 'true', 'null', '[]'];

/** encodeURIComponent, with lone surrogates sent as the invalid UTF-8 they would be. */
function enc(text: string): string {
  try {
    return encodeURIComponent(text);
  } catch {
    return '%ED%A0%80';
  }
}

/** A small deterministic PRNG, so that a failure reproduces. */
function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function randomJson(next: () => number, depth = 0): unknown {
  const pick = Math.floor(next() * (depth > 2 ? 5 : 7));
  switch (pick) {
    case 0:
      return null;
    case 1:
      return next() < 0.5;
    case 2:
      return Math.floor((next() - 0.5) * 1e12);
    case 3:
      return HOSTILE[Math.floor(next() * HOSTILE.length)];
    case 4:
      return String.fromCharCode(...Array.from({ length: Math.floor(next() * 20) }, () => Math.floor(next() * 0xffff)));
    case 5:
      return Array.from({ length: Math.floor(next() * 4) }, () => randomJson(next, depth + 1));
    default:
      return Object.fromEntries(
        Array.from({ length: Math.floor(next() * 5) }, () => [
          ['agent_id', 'attempt', 'summary', 'types', 'id', 'title', 'agent_type', 'reason', 'execution_mode', 'token', 'outcome', '__proto__'][Math.floor(next() * 12)]!,
          randomJson(next, depth + 1),
        ]),
      );
  }
}

let h: Harness;
let app: FastifyInstance;
let pending: string;
let running: string;
let closed: string;
let before: Record<string, unknown>;
let taskCount: number;

function snapshot(s: TaskStatus) {
  return {
    state: s.state,
    mode: s.mode,
    attempt: s.attempt,
    attempts: s.attempts.map((a) => ({ holder: a.holder, end: a.end })),
    assignee: s.assignee,
    reservedFor: s.reservedFor,
    cancelRequested: s.cancelRequested,
    leaseExpiresAt: s.leaseExpiresAt,
    result: s.result,
    title: s.input.title,
    prompt: s.input.prompt,
  };
}

async function state(): Promise<Record<string, unknown>> {
  const [p, r, c] = await Promise.all([pending, running, closed].map((id) => h.tasks.status(id)));
  const agents = (await app.inject({ method: 'GET', url: '/api/v1/agents', headers: adminAuth })).json().agents.map((a: { id: string }) => a.id);
  return { pending: snapshot(p!), running: snapshot(r!), closed: snapshot(c!), agents };
}

beforeAll(async () => {
  h = await startHarness({
    api: { bodyLimitBytes: BODY_LIMIT, maxDequeueWait: '1s' },
    types: ['dev', 'reviewer', 'boss'],
    agents: [A1.config, A2.config],
    // Long leases: the running sentinel must not lapse during the test.
    tasks: { matchWindow: '10m', lease: '10m' },
  });
  await h.startWorker();
  app = await h.app();
  pending = await enqueue(app, { agent_type: 'boss', kind: 'merge', repo: 'acme/sentinel', number: 1, title: 'pending sentinel', prompt: 'p' });
  running = await enqueue(app, { agent_type: 'dev', kind: 'implement', repo: 'acme/sentinel', number: 2, title: 'running sentinel', prompt: 'p' });
  const got = await dequeue(app, A1, 5);
  expect(got.json().task_id).toBe(running);
  closed = await enqueue(app, { agent_type: 'reviewer', kind: 'review', repo: 'acme/sentinel', number: 3, title: 'closed sentinel', prompt: 'p' });
  // Closed by its holder, not by a cancel: a cancel sent again to a cancelled task is answered as the first.
  await h.tasks.claim(closed, { kind: 'agent', id: 'a2', types: ['reviewer'] });
  await h.tasks.fail(closed, { kind: 'agent', id: 'a2' }, 1, 'closed for the test');
  await h.tasks.result(closed);
  before = await state();
  taskCount = await h.tasks.count({});
});
afterAll(async () => h?.close());

interface Endpoint {
  method: 'GET' | 'POST' | 'DELETE';
  /** `{id}` is replaced by a task or agent id. */
  path: string;
  auth: 'admin' | 'agent' | 'signature' | 'none';
  /** A body that would be accepted (against the right target); mutations of it must not be. */
  body?: Record<string, unknown>;
  /** Targets for `{id}` for which the valid body is still refused (state, holder, unknown). */
  ids?: string[];
  /** When mutating this field, start from this body (its other fields keep the request refused). */
  mutationBase?: Record<string, Record<string, unknown>>;
}

const UNKNOWN_TASK = 'implement:nobody:nothing:404';
/** A workflow of Drover's own beside the tasks: no task operation may reach it. */
const ENTITY = 'drover-agent-registry';

function endpoints(): Endpoint[] {
  return [
    { method: 'POST', path: '/api/v1/webhooks/forgejo', auth: 'signature' },
    { method: 'POST', path: '/api/v1/tasks', auth: 'admin', body: { agent_type: 'ghost', title: 't', prompt: 'p' } },
    { method: 'GET', path: '/api/v1/tasks', auth: 'admin' },
    { method: 'GET', path: '/api/v1/tasks/dequeue', auth: 'agent' },
    { method: 'GET', path: '/api/v1/tasks/{id}', auth: 'admin', ids: [UNKNOWN_TASK, ENTITY] },
    { method: 'POST', path: '/api/v1/tasks/{id}/heartbeat', auth: 'agent', body: { agent_id: 'a2', attempt: 1 }, ids: [running, pending, closed, UNKNOWN_TASK, ENTITY] },
    { method: 'POST', path: '/api/v1/tasks/{id}/complete', auth: 'agent', body: { agent_id: 'a1', attempt: 2, summary: 's' }, ids: [running, pending, closed, UNKNOWN_TASK, ENTITY] },
    { method: 'POST', path: '/api/v1/tasks/{id}/fail', auth: 'agent', body: { agent_id: 'a1', attempt: 7, summary: 's' }, ids: [running, pending, closed, UNKNOWN_TASK, ENTITY] },
    { method: 'POST', path: '/api/v1/tasks/{id}/release', auth: 'agent', body: { agent_id: 'a2', attempt: 1 }, ids: [running, pending, closed, UNKNOWN_TASK, ENTITY] },
    { method: 'POST', path: '/api/v1/tasks/{id}/assign', auth: 'admin', body: { agent_id: 'a1', execution_mode: 'ssh_cli' }, ids: [pending, running, closed, UNKNOWN_TASK, ENTITY] },
    { method: 'POST', path: '/api/v1/tasks/{id}/cancel', auth: 'admin', body: { reason: 'r' }, ids: [closed, UNKNOWN_TASK, ENTITY] },
    { method: 'GET', path: '/api/v1/agents', auth: 'admin' },
    { method: 'POST', path: '/api/v1/agents', auth: 'admin', body: { id: 'a1', types: ['dev'] }, mutationBase: { id: { types: ['ghost'] } } },
    { method: 'DELETE', path: '/api/v1/agents/{id}', auth: 'admin', ids: ['a1', 'nobody'] },
    { method: 'POST', path: '/api/v1/agents/{id}/cancel', auth: 'admin', body: {}, ids: ['a2', 'nobody'] },
    { method: 'GET', path: '/api/v1/tasks/{id}/logs', auth: 'admin', ids: [UNKNOWN_TASK, ENTITY] },
    { method: 'GET', path: '/api/v1/tasks/{id}/logs/follow', auth: 'admin', ids: [UNKNOWN_TASK, ENTITY] },
    { method: 'GET', path: '/api/v1/tasks/{id}/session', auth: 'agent', ids: [UNKNOWN_TASK] },
    { method: 'GET', path: '/api/v1/hosts', auth: 'admin' },
    { method: 'GET', path: '/api/v1/stats', auth: 'admin' },
  ];
}

const BAD_AUTH: Array<Record<string, string>> = [
  {},
  { authorization: 'Bearer wrong-token-0123456789' },
  { authorization: 'Bearer ' },
  { authorization: 'Basic YWRtaW46YWRtaW4=' },
  { authorization: `Bearer ${'x'.repeat(5_000)}` },
  { authorization: 'bearer' },
  { authorization: `Bearer ${A1.token}` }, // an agent's token where the admin's is needed (or the other agent's)
  { authorization: 'Bearer admin-token-for-tests extra' },
];

function goodAuth(endpoint: Endpoint, body?: Record<string, unknown>): Record<string, string> {
  if (endpoint.auth === 'admin') return adminAuth;
  if (endpoint.auth === 'agent') return body?.agent_id === 'a2' ? A2.auth : A1.auth;
  return {};
}

interface Case {
  name: string;
  request: InjectOptions;
  /** Signed deliveries that are well-formed JSON but make no task may answer 200 `ignored`. */
  mayBeIgnored?: boolean;
}

function* cases(): Generator<Case> {
  const next = rng(20261120);
  for (const endpoint of endpoints()) {
    const ids = endpoint.ids ?? [''];
    const urlFor = (id: string) => endpoint.path.replace('{id}', enc(id));
    const json = (payload: unknown, headers: Record<string, string>, id = ids[0]!) => ({
      method: endpoint.method,
      url: urlFor(id),
      headers: { 'content-type': 'application/json', ...headers },
      payload: typeof payload === 'string' ? payload : JSON.stringify(payload),
    });

    // Bad tokens, on every endpoint that needs one.
    if (endpoint.auth === 'admin' || endpoint.auth === 'agent') {
      for (const [i, auth] of BAD_AUTH.entries()) {
        const wrongAgentToken = endpoint.auth === 'agent' && i === 6 && endpoint.body?.agent_id === 'a1';
        if (endpoint.auth === 'agent' && i === 6 && !wrongAgentToken) continue; // a1's own token on a1's request
        if (endpoint.method === 'GET' && endpoint.path.includes('dequeue')) {
          yield { name: `${endpoint.path} bad auth ${i}`, request: { method: 'GET', url: `${urlFor('')}?agent_id=a2&wait=0`, headers: auth } };
        } else {
          yield { name: `${endpoint.path} bad auth ${i}`, request: { ...json(endpoint.body ?? {}, auth), headers: { 'content-type': 'application/json', ...auth } } };
        }
      }
    }

    if (endpoint.auth === 'signature') {
      yield* webhookCases(next);
      continue;
    }

    const auth = goodAuth(endpoint, endpoint.body);
    // Valid bodies against targets that must refuse them (unknown ids, wrong state or holder).
    if (endpoint.body || endpoint.method === 'DELETE') for (const id of ids) yield { name: `${endpoint.path} refused for ${id}`, request: json(endpoint.body ?? {}, auth, id) };

    // Unknown and hostile ids in the path.
    if (endpoint.path.includes('{id}')) {
      for (const id of [...HOSTILE.filter(Boolean).slice(0, 14), 'x'.repeat(201), 'a:b:c:'.repeat(60), '%zz', '..%2F..%2Fadmin']) {
        const raw = endpoint.path.replace('{id}', id.startsWith('%') || id.includes('%2F') ? id : enc(id));
        yield { name: `${endpoint.path} hostile id ${JSON.stringify(id.slice(0, 20))}`, request: { method: endpoint.method, url: raw, headers: { 'content-type': 'application/json', ...auth }, payload: JSON.stringify(endpoint.body ?? {}) } };
      }
    }

    if (endpoint.method === 'GET') {
      // Query strings: wrong types, unknown keys, hostile values.
      const queries =
        endpoint.path.includes('dequeue')
          ? ['', 'agent_id=', 'agent_id=a1&wait=-1', 'agent_id=a1&wait=abc', 'agent_id=a1&wait=1e400', 'agent_id=a1&agent_id=a2&wait=0', 'agent_id=ghost&wait=0', `agent_id=${enc(HOSTILE[0]!)}&wait=0`, 'agent_id=a1&wait=0&extra=1', 'agent_id[__proto__]=x']
          : endpoint.path === '/api/v1/tasks'
            ? ['state=exploded', 'mode=1', 'type=BAD TYPE', `repo=${enc("acme/x' OR '1'='1")}`, 'page_size=0', 'page_size=100000', 'page_size=abc', 'page_token=%%%', 'page_token=AAAA.AAAAAAAAAAAAAAAA', `assignee=${enc('$(id)')}`, 'open=maybe', 'unknown=1', 'kind=__proto__']
            : [];
      for (const q of queries) {
        const headers = endpoint.path.includes('dequeue') ? (q.includes('a2') ? A2.auth : A1.auth) : auth;
        yield { name: `${endpoint.path}?${q}`, request: { method: 'GET', url: `${endpoint.path}?${q}`, headers } };
      }
      continue;
    }

    const id = ids[0]!;
    // Malformed JSON, and JSON of the wrong shape.
    for (const text of [...MALFORMED_JSON, ...WRONG_SHAPE_JSON]) yield { name: `${endpoint.path} malformed ${JSON.stringify(text.slice(0, 12))}`, request: json(text, auth, id) };
    // Wrong content types.
    for (const type of ['text/plain', 'application/xml', 'multipart/form-data; boundary=x', 'application/x-www-form-urlencoded']) {
      yield { name: `${endpoint.path} content-type ${type}`, request: { method: endpoint.method, url: urlFor(id), headers: { ...auth, 'content-type': type }, payload: 'agent_id=a1&attempt=1' } };
    }
    // Oversized bodies.
    yield { name: `${endpoint.path} oversized`, request: json({ ...endpoint.body, summary: 'x'.repeat(BODY_LIMIT + 10) }, auth, id) };
    // Wrong types and hostile strings, field by field.
    for (const field of Object.keys(endpoint.body ?? {})) {
      for (const value of [...WRONG_TYPES, ...HOSTILE]) {
        const base = { ...endpoint.body, ...endpoint.mutationBase?.[field] };
        yield { name: `${endpoint.path} ${field}=${JSON.stringify(value)?.slice(0, 20)}`, request: json({ ...base, [field]: value }, auth, id) };
      }
    }
    // Unknown fields, and random JSON.
    yield { name: `${endpoint.path} unknown field`, request: json({ ...endpoint.body, admin: true, __proto__: { x: 1 } }, auth, id) };
    for (let i = 0; i < 25; i++) {
      const body = randomJson(next);
      yield { name: `${endpoint.path} random ${i}`, request: json(body === undefined ? null : body, auth, id) };
    }
  }
}

function* webhookCases(next: () => number): Generator<Case> {
  const url = '/api/v1/webhooks/forgejo';
  const sign = (body: string) => createHmac('sha256', SECRET).update(body).digest('hex');
  const signed = (body: string, headers: Record<string, string> = {}) => ({
    method: 'POST' as const,
    url,
    headers: { 'content-type': 'application/json', 'x-forgejo-event': 'issues', 'x-forgejo-event-type': 'issue_assign', 'x-forgejo-signature': sign(body), ...headers },
    payload: body,
  });
  // Real deliveries with bad signatures: these would make tasks if they were signed.
  for (const delivery of [issueAssigned('acme/bad', 1, ['drover-dev']), reviewRequested('acme/bad', 2, 'drover-reviewer'), reviewed('acme/bad', 3, 'approved', 'x', 'ok')]) {
    for (const signature of [null, '', 'zz', 'a'.repeat(64), sign('other body'), `sha256=${'0'.repeat(64)}`, 'A'.repeat(10_000)]) {
      const { body, headers } = forgejoRequest(delivery, SECRET, { signature });
      yield { name: `webhook ${delivery.eventType} signature ${String(signature).slice(0, 10)}`, request: { method: 'POST', url, headers, payload: body } };
    }
    const { body, headers } = forgejoRequest(delivery, 'not-the-secret');
    yield { name: `webhook ${delivery.eventType} wrong secret`, request: { method: 'POST', url, headers, payload: body } };
  }
  // Correctly signed, but malformed or hostile in structure.
  for (const text of MALFORMED_JSON) yield { name: `webhook signed malformed ${JSON.stringify(text.slice(0, 12))}`, request: signed(text) };
  for (const text of WRONG_SHAPE_JSON) yield { name: `webhook signed shape ${text.slice(0, 12)}`, request: signed(text), mayBeIgnored: true };
  const base = issueAssigned('acme/bad', 5, ['drover-dev']).payload as Record<string, unknown>;
  const structural: Array<Record<string, unknown>> = [
    { ...base, repository: null },
    { ...base, repository: { full_name: "../../etc/passwd" } },
    { ...base, repository: { full_name: 'a/b/c' } },
    { ...base, repository: { full_name: 42 } },
    { ...base, repository: { full_name: "acme/x'; DROP" } },
    { ...base, repository: { full_name: '$(rm -rf /)/x' } },
    { ...base, issue: null, number: 'five' },
    { ...base, issue: { ...(base.issue as object), number: -5 }, number: -5 },
    { ...base, issue: { ...(base.issue as object), number: 1e20 }, number: 1e20 },
    { ...base, issue: { ...(base.issue as object), number: 1.5 }, number: 1.5 },
    { ...base, issue: [] },
    { ...base, issue: { ...(base.issue as object), assignees: [{ login: '$(id)' }, { login: '../x' }], assignee: null } },
  ];
  for (const [i, payload] of structural.entries()) yield { name: `webhook signed structural ${i}`, request: signed(JSON.stringify(payload)), mayBeIgnored: true };
  // Status and review deliveries naming hostile logins and shas.
  yield { name: 'webhook status hostile sha', mayBeIgnored: true, request: signed(JSON.stringify({ sha: '$(id)', state: 'failure', repository: { full_name: 'acme/bad' } }), { 'x-forgejo-event': 'status', 'x-forgejo-event-type': 'status' }) };
  yield { name: 'webhook review hostile reviewer', mayBeIgnored: true, request: signed(JSON.stringify({ ...(reviewRequested('acme/bad', 6, 'x').payload as object), requested_reviewer: { login: '<script>' } }), { 'x-forgejo-event': 'pull_request', 'x-forgejo-event-type': 'pull_request_review_request' }) };
  yield { name: 'webhook oversized', request: signed(JSON.stringify({ ...base, pad: 'x'.repeat(BODY_LIMIT) })) };
  for (const type of ['text/plain', 'application/xml']) yield { name: `webhook content-type ${type}`, request: { ...signed(JSON.stringify(base)), headers: { ...signed(JSON.stringify(base)).headers, 'content-type': type } } };
  for (let i = 0; i < 25; i++) yield { name: `webhook signed random ${i}`, request: signed(JSON.stringify(randomJson(next) ?? null)), mayBeIgnored: true };
}

test('bad input at every endpoint: a 4xx with a stable code each time, no 5xx, nothing made, lost or changed', async () => {
  const seen = new Map<number, number>();
  let count = 0;
  for (const { name, request, mayBeIgnored } of cases()) {
    // Each case from an address of its own, as from a client of its own: failed authentication is
    // limited per address (its own test below floods one address).
    const res = await app.inject({ ...request, remoteAddress: `10.${(count >> 16) & 255}.${(count >> 8) & 255}.${count & 255}` });
    count++;
    seen.set(res.statusCode, (seen.get(res.statusCode) ?? 0) + 1);
    if (mayBeIgnored && res.statusCode === 200) {
      expect(res.json().status, name).toBe('ignored');
      continue;
    }
    expect(res.statusCode, `${name}: ${res.body.slice(0, 300)}`).toBeGreaterThanOrEqual(400);
    expect(res.statusCode, `${name}: ${res.body.slice(0, 300)}`).toBeLessThan(500);
    const body = res.json();
    expect(typeof body.message, name).toBe('string');
    expect(STABLE_CODES.has(body.code), `${name}: code ${body.code}`).toBe(true);
  }
  console.log(`bad input: ${count} requests; answers by status: ${JSON.stringify(Object.fromEntries([...seen].sort()))}`);
  expect(count).toBeGreaterThan(1_000);
  // Every kind of refusal happened.
  for (const status of [400, 401, 404, 409, 413, 415, 422]) expect(seen.get(status) ?? 0, `no ${status} answers`).toBeGreaterThan(0);

  // One address that keeps failing authentication is refused for a while, with a stable code.
  const flood = h.config.api.maxAuthFailures + 5;
  for (let i = 0; i < flood; i++) {
    const res = await app.inject({ method: 'GET', url: '/api/v1/tasks', remoteAddress: '192.0.2.66', headers: { authorization: `Bearer bad-token-${i}` } });
    expect(res.statusCode).toBe(i <= h.config.api.maxAuthFailures ? 401 : 429);
  }

  // Still healthy, and nothing made, lost or changed.
  expect((await app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
  expect((await app.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(200);
  expect(await state()).toEqual(before);
  expect(await h.tasks.count({})).toBe(taskCount);
  // The running sentinel's holder can still work normally.
  const beat = await app.inject({ method: 'POST', url: taskUrl(running, 'heartbeat'), headers: A1.auth, payload: { agent_id: 'a1', attempt: 1 } });
  expect(beat.statusCode).toBe(200);
});
