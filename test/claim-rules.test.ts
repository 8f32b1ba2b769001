// Unit tests of the pure claim rules (no server).
import { describe, expect, test } from 'vitest';
import { DEFAULT_TASK_OPTIONS, type TaskStatus } from '../src/model';
import { attemptsExhausted, checkAssign, checkCancel, checkClaim, checkHolder } from '../src/workflows/claim-rules';

function task(overrides: Partial<TaskStatus> = {}): TaskStatus {
  return {
    taskId: 'implement:acme:web:1',
    runId: 'run-1',
    input: { agentType: 'dev', kind: 'implement', repo: 'acme/web', number: 1, title: 't', prompt: 'p' },
    options: DEFAULT_TASK_OPTIONS,
    state: 'pending',
    mode: 'undecided',
    attempt: 0,
    lostAttempts: 0,
    cancelRequested: false,
    createdAt: '2026-01-01T00:00:00.000Z',
    updatedAt: '2026-01-01T00:00:00.000Z',
    attempts: [],
    ...overrides,
  };
}

const agent = (id = 'a1', types = ['dev']) => ({ kind: 'agent' as const, id, types });
const host = (id = 'h1', types = ['dev']) => ({ kind: 'host' as const, id, types });

describe('checkClaim', () => {
  test('a pending undecided task can be claimed by an agent or by the current SSH dispatch', () => {
    expect(checkClaim(task(), agent(), undefined, 1)).toBeNull();
    expect(checkClaim(task(), host(), 1, 1)).toBeNull();
  });

  test('an SSH attempt from an older dispatch is stale', () => {
    expect(checkClaim(task(), host(), 1, 2)?.code).toBe('stale_dispatch');
    expect(checkClaim(task(), host(), undefined, 2)?.code).toBe('stale_dispatch');
  });

  test('running and closed tasks cannot be claimed', () => {
    expect(checkClaim(task({ state: 'running' }), agent(), undefined, 1)?.code).toBe('task_not_pending');
    for (const state of ['completed', 'failed', 'cancelled'] as const) {
      expect(checkClaim(task({ state }), agent(), undefined, 1)?.code).toBe('task_closed');
    }
  });

  test('a claimant must serve the agent type', () => {
    expect(checkClaim(task(), agent('a1', ['reviewer']), undefined, 1)?.code).toBe('wrong_agent_type');
    expect(checkClaim(task(), host('h1', ['boss']), 1, 1)?.code).toBe('wrong_agent_type');
  });

  test('a reserved task can be claimed by its reservee only', () => {
    const reserved = task({ reservedFor: { kind: 'agent', id: 'a2' }, mode: 'http_pull' });
    expect(checkClaim(reserved, agent('a1'), undefined, 1)?.code).toBe('reserved_for_other');
    expect(checkClaim(reserved, agent('a2'), undefined, 1)).toBeNull();
    const forHost = task({ reservedFor: { kind: 'host', id: 'h2' }, mode: 'ssh_cli' });
    expect(checkClaim(forHost, host('h1'), 1, 1)?.code).toBe('reserved_for_other');
    expect(checkClaim(forHost, agent('h2'), undefined, 1)?.code).toBe('reserved_for_other');
    expect(checkClaim(forHost, host('h2'), 1, 1)).toBeNull();
  });

  test('a task being cancelled cannot be claimed', () => {
    expect(checkClaim(task({ cancelRequested: true }), agent(), undefined, 1)?.code).toBe('task_closed');
  });
});

describe('checkAssign', () => {
  test('only pending tasks, to instances of the type', () => {
    expect(checkAssign(task(), agent())).toBeNull();
    expect(checkAssign(task({ state: 'running' }), agent())?.code).toBe('task_not_pending');
    expect(checkAssign(task({ state: 'completed' }), agent())?.code).toBe('task_closed');
    expect(checkAssign(task(), host('h1', ['reviewer']))?.code).toBe('wrong_agent_type');
  });
});

describe('checkHolder', () => {
  const running = task({ state: 'running', mode: 'http_pull', assignee: { kind: 'agent', id: 'a1' }, attempt: 2 });
  test('the current holder of the current attempt passes', () => {
    expect(checkHolder(running, { kind: 'agent', id: 'a1' }, 2)).toBeNull();
  });
  test('another agent, or an older attempt, is fenced off', () => {
    expect(checkHolder(running, { kind: 'agent', id: 'a2' }, 2)?.code).toBe('not_lease_holder');
    expect(checkHolder(running, { kind: 'agent', id: 'a1' }, 1)?.code).toBe('stale_attempt');
  });
  test('pending, closed and SSH-held tasks reject holder messages', () => {
    expect(checkHolder(task(), { kind: 'agent', id: 'a1' }, 0)?.code).toBe('task_not_running');
    expect(checkHolder(task({ state: 'failed' }), { kind: 'agent', id: 'a1' }, 0)?.code).toBe('task_closed');
    const ssh = task({ state: 'running', mode: 'ssh_cli', assignee: { kind: 'host', id: 'h1' }, attempt: 1 });
    expect(checkHolder(ssh, { kind: 'host', id: 'h1' }, 1)?.code).toBe('not_lease_holder');
  });
  test('a pending task takes the word of its lapsed attempt’s holder, that attempt only, while no other has started', () => {
    const a1 = { kind: 'agent' as const, id: 'a1' };
    const NOW = Date.parse('2026-01-01T00:01:00.000Z');
    const open = { attempt: 2, until: NOW + 1 }; // the lapsed attempt, its run deadline still ahead
    const lapsed = task({
      state: 'pending',
      attempt: 2,
      attempts: [{ attempt: 2, holder: a1, mode: 'http_pull', claimedAt: '2026-01-01T00:00:00.000Z', end: 'lease_lapsed' }],
    });
    expect(checkHolder(lapsed, a1, 2, open, NOW)).toBeNull();
    expect(checkHolder(lapsed, a1, 2)?.code).toBe('task_not_running'); // not marked lapsed (a history from before)
    expect(checkHolder(lapsed, { kind: 'agent', id: 'a2' }, 2, open, NOW)?.code).toBe('task_not_running');
    expect(checkHolder(lapsed, a1, 1, open, NOW)?.code).toBe('task_not_running');
    expect(checkHolder({ ...lapsed, cancelRequested: true }, a1, 2, open, NOW)?.code).toBe('task_not_running');
    const released = { ...lapsed, attempts: [{ ...lapsed.attempts[0]!, end: 'released' as const }] };
    expect(checkHolder(released, a1, 2, open, NOW)?.code).toBe('task_not_running');
  });
});

test('checkCancel rejects closed tasks only', () => {
  expect(checkCancel(task())).toBeNull();
  expect(checkCancel(task({ state: 'running' }))).toBeNull();
  expect(checkCancel(task({ state: 'cancelled' }))?.code).toBe('task_closed');
});

test('attemptsExhausted counts lost attempts against maxAttempts', () => {
  expect(attemptsExhausted(task({ lostAttempts: 2 }))).toBe(false);
  expect(attemptsExhausted(task({ lostAttempts: 3 }))).toBe(true);
});
