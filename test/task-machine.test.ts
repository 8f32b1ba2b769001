// Unit tests of the task's state machine (no server): every transition, driven with explicit time.
import { describe, expect, test } from 'vitest';
import type { TaskInput, TaskOptions } from '../src/model';
import { TaskMachine, TaskRejection } from '../src/workflows/task-machine';

const T0 = Date.parse('2026-01-01T00:00:00.000Z');
const agent = (id = 'a1') => ({ kind: 'agent' as const, id, types: ['dev'] });
const host = (id = 'h1') => ({ kind: 'host' as const, id, types: ['dev'] });

function machine(options: Partial<TaskOptions> = {}): TaskMachine {
  const input: TaskInput = { agentType: 'dev', kind: 'implement', repo: 'acme/web', number: 1, title: 't', prompt: 'p', options };
  return TaskMachine.create('implement:acme:web:1', input, T0, 'run-1');
}

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    if (error instanceof TaskRejection) return error.rejection.code;
    throw error;
  }
  throw new Error('expected a rejection');
}

/** Claims the task for a pull agent at `at` and returns the machine. */
function heldByAgent(options: Partial<TaskOptions> = {}, at = T0) {
  const m = machine(options);
  m.claim({ claimant: agent() }, at);
  m.takeEffects();
  return m;
}

describe('dispatch to SSH hosts', () => {
  test('one attempt at a time, on the type queue, with the window as its schedule-to-start timeout', () => {
    const m = machine({ matchWindowMs: 30_000 });
    expect(m.dueSshDispatch(T0)).toEqual({ dispatch: 1, scheduleToStartMs: 30_000 });
    expect(m.dueSshDispatch(T0 + 10)).toBeUndefined();
    expect(m.attemptInFlight).toBe(true);
  });

  test('no host within the window: http_pull, and no further attempts', () => {
    const m = machine();
    m.dueSshDispatch(T0);
    m.attemptEnded({ dispatch: 1, error: { kind: 'not_started', message: 'timeout' } }, T0 + 30_000);
    expect(m.status.mode).toBe('http_pull');
    expect(m.dueSshDispatch(T0 + 30_001)).toBeUndefined();
  });

  test('a host that went silent before claiming gives the task a fresh window, even after the old one passed', () => {
    const m = machine({ matchWindowMs: 2_000 });
    m.dueSshDispatch(T0);
    m.attemptEnded({ dispatch: 1, error: { kind: 'silent', message: 'heartbeat timeout' } }, T0 + 3_000);
    expect(m.status).toMatchObject({ state: 'pending', mode: 'undecided', lostAttempts: 0 });
    expect(m.dueSshDispatch(T0 + 3_000)).toEqual({ dispatch: 2, scheduleToStartMs: 2_000 });
  });

  test('a host that failed before claiming, after the window: http_pull rather than another try', () => {
    const m = machine({ matchWindowMs: 2_000 });
    m.dueSshDispatch(T0);
    m.attemptEnded({ dispatch: 1, outcome: { kind: 'declined', reason: 'cannot connect' } }, T0 + 2_500);
    expect(m.dueSshDispatch(T0 + 2_500)).toBeUndefined();
    expect(m.status.mode).toBe('http_pull');
  });

  test('failures before the claim back off; a full host does not', () => {
    const m = machine({ matchWindowMs: 600_000 });
    m.dueSshDispatch(T0);
    m.attemptEnded({ dispatch: 1, outcome: { kind: 'declined', reason: 'full', busy: true } }, T0 + 10);
    expect(m.dueSshDispatch(T0 + 10)?.dispatch).toBe(2);
    m.attemptEnded({ dispatch: 2, outcome: { kind: 'declined', reason: 'broken' } }, T0 + 20);
    expect(m.dueSshDispatch(T0 + 20)?.dispatch).toBe(3); // the first failure: at once
    m.attemptEnded({ dispatch: 3, outcome: { kind: 'declined', reason: 'broken' } }, T0 + 30);
    expect(m.dueSshDispatch(T0 + 30)).toBeUndefined();
    expect(m.wakeAt()).toBe(T0 + 1_030);
    expect(m.dueSshDispatch(T0 + 1_030)?.dispatch).toBe(4);
    m.attemptEnded({ dispatch: 4, outcome: { kind: 'declined', reason: 'broken' } }, T0 + 1_040);
    expect(m.wakeAt()).toBe(T0 + 3_040);
  });

  test('a stale attempt cannot claim; the current one can, and a pull agent that wins cancels it', () => {
    const m = machine();
    m.dueSshDispatch(T0);
    expect(codeOf(() => m.claim({ claimant: host(), dispatch: 7 }, T0))).toBe('stale_dispatch');
    m.claim({ claimant: agent() }, T0 + 5);
    expect(m.takeEffects()).toEqual([
      { type: 'report', event: 'started' },
      { type: 'cancelAttempt', dispatch: 1 },
    ]);
    expect(m.attemptInFlight).toBe(false);
  });

  test('an assigned task goes to its host’s own queue, with no window', () => {
    const m = machine();
    m.dueSshDispatch(T0);
    m.assign({ target: host('h9') }, T0 + 1);
    expect(m.takeEffects()).toEqual([{ type: 'cancelAttempt', dispatch: 1 }]);
    expect(m.dueSshDispatch(T0 + 2)).toEqual({ dispatch: 2, host: { kind: 'host', id: 'h9' } });
  });
});

describe('SSH attempts that hold the task', () => {
  function running() {
    const m = machine();
    m.dueSshDispatch(T0);
    m.claim({ claimant: host(), dispatch: 1 }, T0 + 100);
    m.attemptEnded({ dispatch: 1, outcome: { kind: 'claimed', attempt: 1 } }, T0 + 100);
    expect(m.dueSshRun()).toEqual({ dispatch: 1, hostId: 'h1', attempt: 1, runDeadline: T0 + 100 + 6 * 3_600_000 });
    expect(m.dueSshRun()).toBeUndefined();
    m.takeEffects();
    return m;
  }

  test('the claim’s activity ended without taking the run on (before it heard its claim won, or its host gone): released, not lost, dispatched again at once', () => {
    for (const error of [
      { kind: 'failed' as const, message: 'gone' },
      { kind: 'silent' as const, message: 'heartbeat timeout' },
    ]) {
      const m = machine();
      m.dueSshDispatch(T0);
      m.claim({ claimant: host(), dispatch: 1 }, T0 + 100);
      expect(m.attemptInFlight).toBe(true);
      m.attemptEnded({ dispatch: 1, error }, T0 + 40_000);
      expect(m.status).toMatchObject({ state: 'pending', lostAttempts: 0, attempts: [{ end: 'released' }] });
      expect(m.dueSshRun()).toBeUndefined();
      expect(m.dueSshDispatch(T0 + 40_000)?.dispatch).toBe(2);
    }
  });

  test('cancelled between the claim and its run: closed, and no run is scheduled', () => {
    const m = machine();
    m.dueSshDispatch(T0);
    m.claim({ claimant: host(), dispatch: 1 }, T0 + 100);
    m.attemptEnded({ dispatch: 1, outcome: { kind: 'claimed', attempt: 1 } }, T0 + 100);
    m.cancel({ reason: 'no' }, T0 + 101);
    expect(m.status).toMatchObject({ state: 'cancelled', attempts: [{ end: 'cancelled' }] });
    expect(m.dueSshRun()).toBeUndefined();
  });

  test('no worker of the host takes the run back within the fence grace: lost, and dispatched again', () => {
    const m = running();
    m.attemptEnded({ dispatch: 1, error: { kind: 'not_started', message: 'schedule-to-start' } }, T0 + 90_000);
    expect(m.status).toMatchObject({ state: 'pending', lostAttempts: 1, attempts: [{ end: 'lost', reason: 'host h1 did not take the run back within the fence grace' }] });
  });

  test('finished: the result closes the task, with the log tail on the attempt', () => {
    const m = running();
    m.attemptEnded({ dispatch: 1, outcome: { kind: 'finished', attempt: 1, result: { outcome: 'success', summary: 'ok' }, log: 'tail' } }, T0 + 900);
    expect(m.status).toMatchObject({ state: 'completed', result: { outcome: 'success' }, attempts: [{ end: 'completed', logTail: 'tail' }] });
    expect(m.closingEvent()).toBe('succeeded');
  });

  test('the host lost mid-run: a lost attempt, dispatched again with a fresh window', () => {
    const m = running();
    m.attemptEnded({ dispatch: 1, error: { kind: 'silent', message: 'heartbeat timeout' } }, T0 + 900);
    expect(m.status).toMatchObject({ state: 'pending', mode: 'undecided', lostAttempts: 1, attempts: [{ end: 'lost', reason: 'heartbeat timeout' }] });
    expect(m.dueSshDispatch(T0 + 900)).toEqual({ dispatch: 2, scheduleToStartMs: 30_000 });
  });

  test('a run timeout fails the task: not retried, not counted as lost', () => {
    const m = running();
    m.attemptEnded({ dispatch: 1, outcome: { kind: 'timed_out', attempt: 1, log: 'so far' } }, T0 + 900);
    expect(m.status).toMatchObject({ state: 'failed', lostAttempts: 0, attempts: [{ end: 'timed_out', logTail: 'so far' }] });
    expect(m.status.result?.summary).toContain('run timeout of 6 h reached');
    const byServer = running();
    byServer.attemptEnded({ dispatch: 1, error: { kind: 'run_timeout', message: 'start-to-close' } }, T0 + 900);
    expect(byServer.status).toMatchObject({ state: 'failed', attempts: [{ end: 'timed_out' }] });
  });

  test('cancel reaches the attempt, and the task closes once it has ended', () => {
    const m = running();
    m.cancel({ reason: 'not needed', by: 'api' }, T0 + 200);
    expect(m.takeEffects()).toEqual([{ type: 'cancelAttempt', dispatch: 1 }]);
    expect(m.status.state).toBe('running');
    m.attemptEnded({ dispatch: 1, error: { kind: 'cancelled', message: 'cancelled' } }, T0 + 300);
    expect(m.status).toMatchObject({ state: 'cancelled', cancelReason: 'not needed', cancelledBy: 'api', attempts: [{ end: 'cancelled' }] });
  });
});

describe('pull agents', () => {
  test('a claim gives a lease and a run deadline; heartbeats extend the lease up to the deadline', () => {
    const m = heldByAgent({ leaseMs: 60_000, runTimeoutMs: 100_000 });
    expect(m.status).toMatchObject({ leaseExpiresAt: new Date(T0 + 60_000).toISOString(), runDeadlineAt: new Date(T0 + 100_000).toISOString() });
    expect(m.heartbeat({ holder: agent(), attempt: 1 }, T0 + 30_000).leaseExpiresAt).toBe(new Date(T0 + 90_000).toISOString());
    expect(m.heartbeat({ holder: agent(), attempt: 1 }, T0 + 80_000).leaseExpiresAt).toBe(new Date(T0 + 100_000).toISOString());
    expect(m.wakeAt()).toBe(T0 + 100_000);
  });

  test('the run deadline fails the task: not retried', () => {
    const m = heldByAgent({ runTimeoutMs: 100_000 });
    m.heartbeat({ holder: agent(), attempt: 1 }, T0 + 50_000);
    m.expire(T0 + 100_000);
    expect(m.status).toMatchObject({ state: 'failed', lostAttempts: 0, attempts: [{ end: 'timed_out' }] });
    expect(m.status.result?.summary).toMatch(/run timeout of 100 s reached \(pull agent a1\)/);
  });

  test('a lapsed lease is a lost attempt; the stale holder is fenced off; attempts run out', () => {
    const m = heldByAgent({ leaseMs: 10_000, maxAttempts: 2 });
    m.expire(T0 + 9_999);
    expect(m.status.state).toBe('running');
    m.expire(T0 + 10_000);
    expect(m.status).toMatchObject({ state: 'pending', lostAttempts: 1, attempts: [{ end: 'lease_lapsed' }] });
    expect(codeOf(() => m.heartbeat({ holder: agent(), attempt: 1 }, T0 + 10_001))).toBe('task_not_running');
    m.claim({ claimant: agent('a2') }, T0 + 11_000);
    expect(codeOf(() => m.complete({ holder: agent(), attempt: 1, result: { outcome: 'success', summary: '' } }, T0 + 11_001))).toBe('not_lease_holder');
    m.expire(T0 + 21_000);
    expect(m.status).toMatchObject({ state: 'failed', lostAttempts: 2 });
  });

  test('after a cancel the lease lasts the grace at most, however often the agent heartbeats', () => {
    const m = heldByAgent({ leaseMs: 60_000, cancelGraceMs: 5_000 });
    m.cancel({ reason: 'stop', by: 'api' }, T0 + 1_000);
    expect(m.status).toMatchObject({ state: 'running', cancelRequested: true, leaseExpiresAt: new Date(T0 + 6_000).toISOString() });
    const answer = m.heartbeat({ holder: agent(), attempt: 1 }, T0 + 4_000);
    expect(answer).toEqual({ cancelRequested: true, leaseExpiresAt: new Date(T0 + 6_000).toISOString(), leaseMsLeft: 2_000 });
    expect(m.heartbeat({ holder: agent(), attempt: 1 }, T0 + 7_000).leaseExpiresAt).toBe(new Date(T0 + 7_000).toISOString());
    m.expire(T0 + 7_000);
    expect(m.status).toMatchObject({ state: 'cancelled', lostAttempts: 0, cancelReason: 'stop' });
  });

  test('a second cancel keeps the first reason; a closed task refuses a cancel', () => {
    const m = heldByAgent();
    m.cancel({ reason: 'first', by: 'api' }, T0 + 1);
    m.cancel({ reason: 'second', by: 'temporal' }, T0 + 2);
    expect(m.status).toMatchObject({ cancelReason: 'first', cancelledBy: 'api' });
    m.complete({ holder: agent(), attempt: 1, result: { outcome: 'success', summary: 'done anyway' } }, T0 + 3);
    expect(m.status).toMatchObject({ state: 'cancelled', result: { summary: 'done anyway' } });
    expect(codeOf(() => m.cancel({}, T0 + 4))).toBe('task_closed');
  });

  test('release gives the task back without counting it as lost', () => {
    const m = heldByAgent();
    m.release({ holder: agent(), attempt: 1 }, T0 + 10);
    expect(m.status).toMatchObject({ state: 'pending', mode: 'undecided', lostAttempts: 0, attempts: [{ end: 'released' }] });
  });

  test('a pending task cancelled closes at once and cancels its SSH attempt', () => {
    const m = machine();
    m.dueSshDispatch(T0);
    m.cancel({}, T0 + 5);
    expect(m.status.state).toBe('cancelled');
    expect(m.takeEffects()).toEqual([{ type: 'cancelAttempt', dispatch: 1 }]);
    expect(m.closingEvent()).toBe('cancelled');
  });
});

test('a snapshot resumes the same task (continue-as-new)', () => {
  const m = machine();
  m.dueSshDispatch(T0);
  m.attemptEnded({ dispatch: 1, outcome: { kind: 'declined', reason: 'x' } }, T0 + 10);
  const resumed = TaskMachine.resume(structuredClone(m.snapshot()));
  expect(resumed.status).toEqual(m.status);
  expect(resumed.dueSshDispatch(T0 + 20)).toEqual(m.dueSshDispatch(T0 + 20));
});

describe('hold (a spent daily budget)', () => {
  const held = () => {
    const input: TaskInput = { agentType: 'dev', kind: 'implement', repo: 'acme/web', number: 1, title: 't', prompt: 'p', hold: { reason: 'budget spent', until: new Date(T0 + 60_000).toISOString() } };
    return TaskMachine.create('implement:acme:web:1', input, T0, 'run-1');
  };

  test('a held task is neither dispatched nor claimed before its hold ends; then it is, as any task', () => {
    const m = held();
    expect(m.snapshot().status.hold?.reason).toBe('budget spent');
    expect(m.dueSshDispatch(T0)).toBeUndefined();
    expect(m.wakeAt()).toBe(T0 + 60_000);
    expect(codeOf(() => m.claim({ claimant: agent() }, T0 + 1))).toBe('task_held');
    m.expire(T0 + 59_999);
    expect(m.snapshot().status.hold).toBeDefined();
    m.expire(T0 + 60_000);
    expect(m.snapshot().status.hold).toBeUndefined();
    expect(m.dueSshDispatch(T0 + 60_000)).toMatchObject({ dispatch: 1 });
  });

  test('a hold already over when the task starts is none; a coordinator’s assign lifts one', () => {
    const input: TaskInput = { agentType: 'dev', kind: 'implement', repo: 'acme/web', number: 1, title: 't', prompt: 'p', hold: { reason: 'r', until: new Date(T0 - 1).toISOString() } };
    expect(TaskMachine.create('x', input, T0, 'run-1').snapshot().status.hold).toBeUndefined();
    const m = held();
    m.assign({ target: agent() }, T0 + 1);
    expect(m.snapshot().status.hold).toBeUndefined();
    expect(m.claim({ claimant: agent() }, T0 + 2)).toMatchObject({ attempt: 1 });
  });
});

describe('pull offers', () => {
  test('a pending task keeps one offer out on its type queue beside its SSH attempt; a host claim withdraws it', () => {
    const m = machine();
    expect(m.dueOffer(T0)).toEqual({ offer: 1 });
    expect(m.dueOffer(T0)).toBeUndefined(); // one at a time
    expect(m.dueSshDispatch(T0)).toMatchObject({ dispatch: 1 });
    m.claim({ claimant: host(), dispatch: 1 }, T0 + 5);
    expect(m.takeEffects()).toEqual([{ type: 'report', event: 'started' }, { type: 'withdrawOffer', offer: 1 }]);
    m.offerEnded({ offer: 1, error: 'cancelled' }, T0 + 6); // the withdrawn offer's end is old news
    expect(m.dueOffer(T0 + 6)).toBeUndefined();
  });

  test('a claim through the offer leaves the offer to end by itself; another claim withdraws it and cancels the SSH attempt', () => {
    const through = machine();
    through.dueOffer(T0);
    through.dueSshDispatch(T0);
    through.claim({ claimant: agent(), offer: 1 }, T0 + 1);
    expect(through.takeEffects()).toEqual([{ type: 'report', event: 'started' }, { type: 'cancelAttempt', dispatch: 1 }]);
    through.offerEnded({ offer: 1, outcome: { kind: 'claimed', attempt: 1, agentId: 'a1' } }, T0 + 2);

    const around = machine();
    around.dueOffer(T0);
    around.claim({ claimant: agent() }, T0 + 1);
    expect(around.takeEffects()).toContainEqual({ type: 'withdrawOffer', offer: 1 });
  });

  test('a task given back is offered again; a held or cancelled one is not', () => {
    const m = machine();
    m.dueOffer(T0);
    m.claim({ claimant: agent(), offer: 1 }, T0 + 1);
    m.offerEnded({ offer: 1, outcome: { kind: 'claimed', attempt: 1, agentId: 'a1' } }, T0 + 2);
    expect(m.dueOffer(T0 + 2)).toBeUndefined(); // running
    m.release({ holder: agent(), attempt: 1 }, T0 + 3);
    expect(m.dueOffer(T0 + 3)).toEqual({ offer: 2 });
    m.cancel({}, T0 + 4);
    expect(m.takeEffects()).toContainEqual({ type: 'withdrawOffer', offer: 2 });
    expect(m.dueOffer(T0 + 5)).toBeUndefined();

    const input: TaskInput = { agentType: 'dev', kind: 'implement', repo: 'acme/web', number: 1, title: 't', prompt: 'p', hold: { reason: 'budget', until: new Date(T0 + 1_000).toISOString() } };
    const held = TaskMachine.create('x', input, T0, 'run-1');
    expect(held.dueOffer(T0)).toBeUndefined();
    held.expire(T0 + 1_000);
    expect(held.dueOffer(T0 + 1_000)).toEqual({ offer: 1 });
  });

  test('assigned to a pull agent: the type queue’s offer is withdrawn and the next goes to the agent’s own queue; to a host: none', () => {
    const m = machine();
    m.dueOffer(T0);
    m.assign({ target: agent('a7') }, T0 + 1);
    expect(m.takeEffects()).toContainEqual({ type: 'withdrawOffer', offer: 1 });
    expect(m.dueOffer(T0 + 1)).toEqual({ offer: 2, agentId: 'a7' });
    m.assign({ target: host('h2') }, T0 + 2);
    expect(m.takeEffects()).toContainEqual({ type: 'withdrawOffer', offer: 2 });
    expect(m.dueOffer(T0 + 2)).toBeUndefined();
  });

  test('offers that end unclaimed while the task waits are made again at once, then with a growing backoff', () => {
    const m = machine();
    const lost = { kind: 'lost' as const, rejection: { code: 'reserved_for_other' as const, message: 'x' } };
    m.dueOffer(T0);
    m.offerEnded({ offer: 1, outcome: lost }, T0 + 10);
    expect(m.dueOffer(T0 + 10)).toEqual({ offer: 2 });
    m.offerEnded({ offer: 2, outcome: lost }, T0 + 20);
    expect(m.dueOffer(T0 + 20)).toBeUndefined();
    expect(m.wakeAt()).toBe(T0 + 20 + 1_000);
    expect(m.dueOffer(T0 + 1_020)).toEqual({ offer: 3 });
  });

  test('the offer count survives continue-as-new, so that a new run’s offers have new numbers', () => {
    const m = machine();
    m.dueOffer(T0);
    m.withdrawOffer();
    const resumed = TaskMachine.resume(structuredClone(m.snapshot()));
    expect(resumed.dueOffer(T0 + 1)).toEqual({ offer: 2 });
  });
});

describe('a pull agent’s claim confirmed by its first heartbeat', () => {
  test('until then, the lease is the confirm window; a claim nobody confirms comes back then, not after a whole lease', () => {
    const m = machine({ leaseMs: 60_000, claimConfirmMs: 15_000 });
    const grant = m.claim({ claimant: agent() }, T0);
    expect(grant).toMatchObject({ leaseMs: 15_000, leaseExpiresAt: new Date(T0 + 15_000).toISOString() });
    expect(m.wakeAt()).toBe(T0 + 15_000);
    m.expire(T0 + 15_000);
    expect(m.status).toMatchObject({ state: 'pending', lostAttempts: 1, attempts: [{ end: 'lease_lapsed' }] });
    expect(m.status.attempts[0]!.reason).toMatch(/never confirmed its claim \(no heartbeat within 15 s\)/);
  });

  test('the first heartbeat gives the whole lease; a lapse after it is an ordinary one', () => {
    const m = machine({ leaseMs: 60_000, claimConfirmMs: 15_000 });
    m.claim({ claimant: agent() }, T0);
    expect(m.heartbeat({ holder: agent(), attempt: 1 }, T0 + 1_000).leaseMsLeft).toBe(60_000);
    m.expire(T0 + 61_000);
    expect(m.status.attempts[0]!.reason).toBe('lease of pull agent a1 lapsed');
  });

  test('a task made before the confirm window existed keeps the whole lease from its claim', () => {
    const m = machine({ leaseMs: 60_000 });
    expect(m.claim({ claimant: agent() }, T0)).toMatchObject({ leaseMs: 60_000 });
  });
});

describe('a lease that lapsed while nothing could reach the task (an outage)', () => {
  test('noticed late: one more lease from then, in which the agent may still report; on time: lost as ever', () => {
    const m = heldByAgent({ leaseMs: 10_000, runTimeoutMs: 600_000 });
    m.expire(T0 + 10_000 + 45_000, { lateWakeGrace: true }); // Temporal was down 45 s past the lease's end
    expect(m.status).toMatchObject({ state: 'running', lostAttempts: 0, leaseExpiresAt: new Date(T0 + 65_000).toISOString() });
    m.complete({ holder: agent(), attempt: 1, result: { outcome: 'success', summary: 'finished during the outage' } }, T0 + 56_000);
    expect(m.status).toMatchObject({ state: 'completed', attempts: [{ end: 'completed' }] });

    const onTime = heldByAgent({ leaseMs: 10_000 });
    onTime.expire(T0 + 10_100, { lateWakeGrace: true });
    expect(onTime.status).toMatchObject({ state: 'pending', lostAttempts: 1 });

    const withoutPatch = heldByAgent({ leaseMs: 10_000 });
    withoutPatch.expire(T0 + 60_000);
    expect(withoutPatch.status).toMatchObject({ state: 'pending', lostAttempts: 1 });
  });

  test('the grace never outlasts the run deadline, and a task being cancelled gets none', () => {
    const m = heldByAgent({ leaseMs: 10_000, runTimeoutMs: 30_000 });
    m.expire(T0 + 25_000, { lateWakeGrace: true });
    expect(m.status.leaseExpiresAt).toBe(new Date(T0 + 30_000).toISOString());

    const cancelled = heldByAgent({ leaseMs: 10_000, cancelGraceMs: 5_000 });
    cancelled.cancel({}, T0 + 1_000);
    cancelled.expire(T0 + 30_000, { lateWakeGrace: true });
    expect(cancelled.status.state).toBe('cancelled');
  });
});

describe('a lapsed attempt’s holder, heard from late (before any other attempt started)', () => {
  const late = { lateWakeGrace: true, lapseGrace: () => true };
  /** Claimed by a1 at T0, never confirmed: the confirm window (15 s) lapses on time at T0 + 15 s. */
  function lapsed(options: Partial<TaskOptions> = {}) {
    const m = machine({ leaseMs: 60_000, claimConfirmMs: 15_000, lapseGraceMs: 5_000, ...options });
    m.dueOffer(T0);
    m.claim({ claimant: agent(), offer: 1 }, T0);
    m.offerEnded({ offer: 1, outcome: { kind: 'claimed', attempt: 1, agentId: 'a1' } }, T0);
    m.takeEffects();
    m.expire(T0 + 15_000, late);
    return m;
  }

  test('the task goes to nobody else for the lapse grace: no offer, no SSH attempt, until then', () => {
    const m = lapsed();
    expect(m.status).toMatchObject({ state: 'pending', lostAttempts: 1, attempts: [{ end: 'lease_lapsed' }] });
    expect(m.dueOffer(T0 + 15_000)).toBeUndefined();
    expect(m.dueSshDispatch(T0 + 15_000)).toBeUndefined();
    expect(m.wakeAt()).toBe(T0 + 20_000);
    expect(m.dueSshDispatch(T0 + 20_000)).toMatchObject({ dispatch: 1 });
    expect(m.dueOffer(T0 + 20_000)).toEqual({ offer: 2 });
  });

  test('its late result is taken: the task completes with it, the attempt is not lost, and what went out for others is withdrawn', () => {
    const m = lapsed();
    m.dueSshDispatch(T0 + 20_000);
    m.dueOffer(T0 + 20_000);
    m.complete({ holder: agent(), attempt: 1, result: { outcome: 'success', summary: 'finished while the database was down' } }, T0 + 21_000);
    expect(m.status).toMatchObject({ state: 'completed', lostAttempts: 0, result: { summary: 'finished while the database was down' } });
    expect(m.status.attempts).toHaveLength(1);
    expect(m.status.attempts[0]).toMatchObject({ end: 'completed', retaken: { lapsedAt: new Date(T0 + 15_000).toISOString(), at: new Date(T0 + 21_000).toISOString() } });
    expect(m.status.attempts[0]!.retaken!.lapseReason).toMatch(/never confirmed its claim/);
    expect(m.takeEffects()).toEqual([
      { type: 'cancelAttempt', dispatch: 1 },
      { type: 'withdrawOffer', offer: 2 },
    ]);
  });

  test('its late heartbeat takes the task back: running again, the same attempt, a whole lease from now', () => {
    const m = lapsed();
    const answer = m.heartbeat({ holder: agent(), attempt: 1 }, T0 + 16_000);
    expect(answer.leaseMsLeft).toBe(60_000);
    expect(m.status).toMatchObject({ state: 'running', mode: 'http_pull', attempt: 1, lostAttempts: 0, assignee: { kind: 'agent', id: 'a1' } });
    expect(m.status.attempts[0]).toMatchObject({ end: 'running', retaken: { at: new Date(T0 + 16_000).toISOString() } });
    expect(m.status.attempts[0]!.endedAt).toBeUndefined();
    expect(m.status.runDeadlineAt).toBe(new Date(T0 + m.status.options.runTimeoutMs).toISOString()); // from the claim, not the take-back
    expect(m.wakeAt()).toBe(T0 + 76_000);
    // Nothing is offered or dispatched while it runs, the grace's wake-up is gone.
    expect(m.dueOffer(T0 + 20_000)).toBeUndefined();
    expect(m.dueSshDispatch(T0 + 20_000)).toBeUndefined();
  });

  test('its late release ends the wait: the task goes on at once, and the attempt counts as given back', () => {
    const m = lapsed();
    m.release({ holder: agent(), attempt: 1 }, T0 + 16_000);
    expect(m.status).toMatchObject({ state: 'pending', lostAttempts: 0, attempts: [{ end: 'released' }] });
    expect(m.dueOffer(T0 + 16_000)).toEqual({ offer: 2 });
  });

  test('once another attempt has started, the lapsed holder is refused as ever', () => {
    const m = lapsed();
    m.dueOffer(T0 + 20_000);
    m.claim({ claimant: agent('a2'), offer: 2 }, T0 + 20_100);
    m.offerEnded({ offer: 2, outcome: { kind: 'claimed', attempt: 2, agentId: 'a2' } }, T0 + 20_100);
    expect(codeOf(() => m.complete({ holder: agent(), attempt: 1, result: { outcome: 'success', summary: 'too late' } }, T0 + 21_000))).toBe('not_lease_holder');
    expect(codeOf(() => m.heartbeat({ holder: agent(), attempt: 1 }, T0 + 21_000))).toBe('not_lease_holder');
    // …and once a2's attempt lapses in turn, only a2 (attempt 2) may come back.
    m.expire(T0 + 20_100 + 15_000, late);
    expect(codeOf(() => m.heartbeat({ holder: agent(), attempt: 1 }, T0 + 36_000))).toBe('task_not_running');
    expect(m.heartbeat({ holder: agent('a2'), attempt: 2 }, T0 + 36_000).leaseMsLeft).toBe(60_000);
  });

  test('only the lapsed holder, and only its attempt; none after a cancel; none without the patch', () => {
    const m = lapsed();
    expect(codeOf(() => m.heartbeat({ holder: agent('a2'), attempt: 1 }, T0 + 16_000))).toBe('task_not_running');
    expect(codeOf(() => m.heartbeat({ holder: agent(), attempt: 0 }, T0 + 16_000))).toBe('task_not_running');

    const cancelled = lapsed();
    cancelled.cancel({}, T0 + 16_000);
    expect(cancelled.status.state).toBe('cancelled');
    expect(codeOf(() => cancelled.heartbeat({ holder: agent(), attempt: 1 }, T0 + 17_000))).toBe('task_closed');

    const unpatched = machine({ leaseMs: 60_000, claimConfirmMs: 15_000, lapseGraceMs: 5_000 });
    unpatched.claim({ claimant: agent() }, T0);
    unpatched.expire(T0 + 15_000, { lateWakeGrace: true, lapseGrace: () => false });
    expect(codeOf(() => unpatched.heartbeat({ holder: agent(), attempt: 1 }, T0 + 16_000))).toBe('task_not_running');
    expect(unpatched.dueOffer(T0 + 15_000)).toEqual({ offer: 1 }); // no grace either
  });

  test('an operator’s assign ends the wait: the task goes to the target at once, and the lapsed holder is refused', () => {
    const m = lapsed();
    m.assign({ target: agent('a2') }, T0 + 16_000);
    expect(m.dueOffer(T0 + 16_000)).toEqual({ offer: 2, agentId: 'a2' });
    expect(codeOf(() => m.complete({ holder: agent(), attempt: 1, result: { outcome: 'success', summary: 'late' } }, T0 + 17_000))).toBe('task_not_running');
  });

  test('a run past its deadline timed out, whatever its holder says late', () => {
    const m = lapsed({ runTimeoutMs: 60_000 });
    expect(m.heartbeat({ holder: agent(), attempt: 1 }, T0 + 59_000).leaseMsLeft).toBe(1_000);
    const past = lapsed({ runTimeoutMs: 60_000 });
    expect(codeOf(() => past.complete({ holder: agent(), attempt: 1, result: { outcome: 'success', summary: 'too late' } }, T0 + 60_000))).toBe('task_not_running');
  });

  test('the lapsed attempt survives continue-as-new', () => {
    const m = TaskMachine.resume(structuredClone(lapsed().snapshot()));
    m.heartbeat({ holder: agent(), attempt: 1 }, T0 + 16_000);
    expect(m.status.state).toBe('running');
  });

  test('the last lapse that gives up the task leaves nothing to take back', () => {
    const m = lapsed({ maxAttempts: 1 });
    expect(m.status.state).toBe('failed');
    expect(codeOf(() => m.heartbeat({ holder: agent(), attempt: 1 }, T0 + 16_000))).toBe('task_closed');
  });
});
