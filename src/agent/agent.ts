// `drover agent`: the reference pull agent. It long-polls dequeue, runs the command locally with
// the prompt on stdin (the same wrapper script and providers as the SSH hosts), heartbeats its
// lease, stops the command on cancel or lease loss, and reports complete or fail. Server restarts
// and network drops are ridden out with backoff; SIGINT/SIGTERM finish or give back the task.
import type { Logger } from '../log';
import type { TaskInput, TaskKind, TaskResult } from '../model';
import { getProvider, type ProviderName } from '../providers';
import { clip } from '../providers/result-line';
import { driveAgentProcess } from '../run/agent-process';
import { taskEnvironment, withResumedSession } from '../run/env';
import { runKey } from '../run/detached';
import { killLocalGroup, runLocalScript, spawnLocalScript } from '../run/local';
import { buildRunScript } from '../run/shell';
import { sessionToResume, type ResumePolicy } from '../sessions';
import { AttemptWorkspace, workspaceFailure, type ScriptExec, type WorkspaceSettings } from '../workspace/workspace';
import { type DroverHttpClient, type Grant, HttpError, isTransient, type ResultReport } from './http';

/**
 * A finished result is retried at least this often through an outage: once the server is back it
 * gets through within the task's lapse grace (tasks.lapseGrace), before the task goes to another agent.
 */
export const REPORT_RETRY_MAX_MS = 5_000;

/** The one try to give back a task whose command the fence stopped: short, as the server was out of reach. */
const RELEASE_AFTER_FENCE_TIMEOUT_MS = 5_000;

export interface PullAgentOptions {
  client: DroverHttpClient;
  /** The agent command's argv (prompt on its stdin). */
  command: string[];
  provider: ProviderName;
  workdir: string;
  /** Seconds each dequeue long-poll waits. */
  waitSeconds: number;
  killGraceMs: number;
  /** After SIGINT/SIGTERM, how long a running task may still finish before it is given back. */
  shutdownGraceMs: number;
  sessionResume: ResumePolicy;
  log: Logger;
  /** Environment of the command (default: this process's, without DROVER_AGENT_TOKEN). */
  env?: NodeJS.ProcessEnv;
  backoff?: { initialMs: number; maxMs: number };
  /** How long a finished task's report is retried through outages. */
  reportRetryMs?: number;
  /** Stop after this many tasks. */
  maxTasks?: number;
  /** Every piece of the command's output. */
  onOutput?(text: string): void;
  /** Make a worktree per task that names a repository (src/workspace); none: run in `workdir`. */
  workspaces?: Omit<WorkspaceSettings, 'workdir'>;
  /** Tool uses the agent CLI refused: fail the task (default), or flag them in the result. */
  permissionDenials?: 'fail' | 'flag';
}

interface CurrentTask {
  grant: Grant;
  abort: AbortController;
  /** The command's output not yet uploaded: heartbeats carry it, the final report the rest. */
  output: PendingOutput;
  /** Why the run is being stopped, when it is. */
  stopReason?: 'cancel' | 'lease_lost' | 'lease_expired' | 'shutdown';
  /** Set once the command has ended and its outcome is being reported. */
  reporting?: boolean;
}

/**
 * Waits `ms`, or less if `signal` aborts. The abort listener goes when the wait ends: the same
 * signal serves every heartbeat of a task and every backoff of the agent's life.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

export class PullAgent {
  private stopping = false;
  private readonly stopSignal = new AbortController();
  private current: CurrentTask | undefined;
  private graceTimer: NodeJS.Timeout | undefined;
  private tasksDone = 0;

  constructor(private readonly options: PullAgentOptions) {}

  get id(): string {
    return this.options.client.agentId;
  }

  /** Runs until stopped (or maxTasks). Rejects only on errors retrying cannot fix (bad token, bad request). */
  async run(): Promise<void> {
    const { client, log } = this.options;
    const backoff = this.options.backoff ?? { initialMs: 500, maxMs: 30_000 };
    let delay = backoff.initialMs;
    log.info({ agent: this.id, command: this.options.command, provider: this.options.provider }, 'pull agent started');
    while (!this.stopping) {
      let grant: Grant | undefined;
      try {
        grant = await client.dequeue(this.options.waitSeconds, this.stopSignal.signal);
        delay = backoff.initialMs;
      } catch (error) {
        if (this.stopping) break;
        if (!isTransient(error)) throw error;
        const wait = Math.round(delay * (0.5 + Math.random() / 2));
        log.warn({ err: (error as Error).message, retryInMs: wait }, 'server unreachable; backing off');
        await sleep(wait, this.stopSignal.signal);
        delay = Math.min(delay * 2, backoff.maxMs);
        continue;
      }
      if (!grant) continue;
      if (this.stopping) {
        // Stopped while this task was on its way: give it back untried.
        await client.release(grant.task_id, grant.attempt).catch((error: unknown) => log.warn({ err: (error as Error).message }, 'could not give back a task'));
        break;
      }
      await this.runTask(grant);
      this.tasksDone += 1;
      if (this.options.maxTasks !== undefined && this.tasksDone >= this.options.maxTasks) break;
    }
    if (this.graceTimer) clearTimeout(this.graceTimer);
    log.info({ agent: this.id, tasks: this.tasksDone }, 'pull agent stopped');
  }

  /**
   * First call: take no more tasks; a running task may finish within the shutdown grace, then it
   * is given back. Second call: give it back now.
   */
  stop(): void {
    if (this.stopping) {
      this.giveBack();
      return;
    }
    this.stopping = true;
    this.stopSignal.abort(new Error('agent stopping'));
    if (this.current) {
      this.options.log.info({ taskId: this.current.grant.task_id, graceMs: this.options.shutdownGraceMs }, 'stopping: the running task may finish, then it is given back');
      this.graceTimer = setTimeout(() => this.giveBack(), this.options.shutdownGraceMs);
      this.graceTimer.unref();
    }
  }

  private giveBack(): void {
    const current = this.current;
    if (!current || current.stopReason) return;
    current.stopReason = 'shutdown';
    current.abort.abort(new Error('the agent is shutting down'));
  }

  private async runTask(grant: Grant): Promise<void> {
    const { client, log } = this.options;
    const taskLog = log.child({ taskId: grant.task_id, attempt: grant.attempt });
    const current: CurrentTask = { grant, abort: new AbortController(), output: new PendingOutput() };
    this.current = current;
    taskLog.info('task dequeued');

    // Heartbeats until the result is reported: they keep the lease and bring cancel requests.
    // The first goes at once: it confirms the grant, and starts the lease's reckoning by this
    // agent's own clock (the fence below).
    const beating = new AbortController();
    // A third of the lease; the grant's may be only the confirm window, so each answer's is used.
    const beatEvery = (leaseMs: number) => Math.max(250, Math.min(10_000, Math.floor(leaseMs / 3)));
    let everyMs = beatEvery(grant.lease_ms);
    const fence = new LeaseFence(grant.lease_ms, this.options.killGraceMs, () => {
      if (current.stopReason) return;
      taskLog.warn({ unansweredMs: fence.unansweredMs }, 'no heartbeat answered for the whole lease: stopping the command before the lease runs out');
      current.stopReason = 'lease_expired';
      current.abort.abort(new Error('lease expired by the agent’s clock'));
      // No more heartbeats: one that got through now would take back a task whose command is stopping.
      beating.abort();
    });
    const heartbeats = (async () => {
      let first = true;
      while (!beating.signal.aborted) {
        if (!first) await sleep(everyMs, beating.signal);
        first = false;
        if (beating.signal.aborted) break;
        const sentAt = Date.now();
        const upload = current.output.peek();
        try {
          const answer = await client.heartbeat(grant.task_id, grant.attempt, upload.output);
          current.output.ack(upload.upTo);
          fence.extend(sentAt, answer.lease_ms_left);
          everyMs = beatEvery(answer.lease_ms_left);
          if (answer.cancel_requested && !current.stopReason) {
            current.stopReason = 'cancel';
            taskLog.info('cancel requested: stopping the command');
            current.abort.abort(new Error('cancel requested'));
          }
        } catch (error) {
          if (error instanceof HttpError && error.leaseLost) {
            if (current.reporting) {
              // The command is over; its report (see report()) tells what became of the task.
              taskLog.info({ code: error.code }, 'heartbeats end: the task is no longer running (its report may already be applied)');
              break;
            }
            taskLog.warn({ err: error.message, code: error.code }, 'lease lost: stopping the command');
            current.stopReason = 'lease_lost';
            current.abort.abort(new Error('lease lost'));
            break;
          }
          taskLog.warn({ err: (error as Error).message }, 'heartbeat failed; retrying');
        }
      }
    })();

    try {
      const outcome = await this.execute(grant, current, taskLog);
      current.reporting = true;
      fence.stop();
      await this.report(grant, current, outcome, taskLog);
    } finally {
      fence.stop();
      beating.abort();
      await heartbeats;
      this.current = undefined;
      if (this.graceTimer) clearTimeout(this.graceTimer);
    }
  }

  private async execute(grant: Grant, current: CurrentTask, taskLog: Logger): Promise<{ result?: TaskResult; error?: Error }> {
    const { client } = this.options;
    let resumeSessionId: string | undefined;
    if (grant.session_key && this.options.sessionResume !== 'never') {
      try {
        const earlier = await client.earlierSession(grant.task_id);
        resumeSessionId = sessionToResume(
          earlier ? { sessionId: earlier.session_id, taskId: earlier.task_id, holder: earlier.holder ?? undefined } : undefined,
          { kind: 'agent', id: this.id },
          this.options.sessionResume,
        );
        if (resumeSessionId) taskLog.info({ sessionId: resumeSessionId }, 'resuming the earlier session');
      } catch (error) {
        taskLog.warn({ err: (error as Error).message }, 'could not look up an earlier session; starting a new one');
      }
    }
    const input: TaskInput = {
      agentType: grant.agent_type,
      kind: grant.kind as TaskKind,
      repo: grant.repo,
      number: grant.number,
      title: grant.title,
      prompt: grant.prompt,
      ...(grant.url ? { url: grant.url } : {}),
      ...(grant.session_key ? { sessionKey: grant.session_key } : {}),
      ...(grant.checkout ? { checkout: grant.checkout } : {}),
    };
    const childEnv = { ...(this.options.env ?? process.env) };
    delete childEnv.DROVER_AGENT_TOKEN;
    const say = (text: string) => {
      current.output.add(text);
      this.options.onOutput?.(text);
    };

    // The task's own worktree, when it names a repository and this agent makes workspaces.
    const exec: ScriptExec = (script, stdin, timeoutMs) => runLocalScript(script, stdin, timeoutMs, childEnv);
    const key = runKey(grant.task_id, grant.run_id ?? 'run', grant.attempt);
    const workspace = this.options.workspaces ? AttemptWorkspace.of(exec, { ...this.options.workspaces, workdir: this.options.workdir }, grant.task_id, input, key) : undefined;
    if (workspace) {
      try {
        say(await workspace.prepare());
      } catch (error) {
        taskLog.warn({ err: (error as Error).message }, 'workspace not prepared');
        return { result: workspaceFailure(this.options.provider, error as Error) };
      }
      taskLog.info({ workspace: workspace.dir }, 'workspace ready');
    }

    const provider = getProvider(this.options.provider);
    const baseEnv = {
      ...taskEnvironment({ taskId: grant.task_id, attempt: grant.attempt, input, instanceId: this.id }),
      ...workspace?.environment(),
    };
    const prompt = Buffer.from(grant.prompt, 'utf8');
    const runOnce = async (sessionId: string | undefined) => {
      const script = buildRunScript({
        workdir: workspace?.dir ?? this.options.workdir,
        env: withResumedSession(baseEnv, sessionId),
        argv: provider.argv(this.options.command, { resumeSessionId: sessionId }),
        promptBytes: prompt.length,
        killGraceSeconds: this.options.killGraceMs / 1000,
      });
      const { result, pid } = await driveAgentProcess({
        process: spawnLocalScript(script, { env: childEnv }),
        prompt,
        parser: provider.parser({ permissionDenials: this.options.permissionDenials ?? 'fail' }),
        signal: current.abort.signal,
        onOutput: say,
        onProgress: (message) => taskLog.debug({ progress: message }, 'progress'),
        onStarted: (pid) => taskLog.info({ pid }, 'command started'),
        forceKill: (pid) => killLocalGroup(pid),
        killGraceMs: this.options.killGraceMs,
      });
      taskLog.info({ pid, outcome: result.outcome }, 'command finished');
      return result;
    };
    let result: TaskResult;
    try {
      result = await runOnce(resumeSessionId);
      // The session to resume is gone: once, a fresh session, in the same attempt.
      if (resumeSessionId && result.details?.sessionLost === true) {
        taskLog.warn({ sessionId: resumeSessionId }, 'the session to resume no longer exists: starting a new session');
        say(`[drover] session ${resumeSessionId} no longer exists; starting a new session\n`);
        result = await runOnce(undefined);
      }
    } catch (error) {
      await workspace?.abandon();
      return { error: error as Error };
    }
    if (workspace && !current.stopReason) {
      result = await workspace.finish(result);
      const ws = result.details?.workspace as Record<string, unknown> | undefined;
      taskLog.info({ branch: result.branch, rev: result.rev, push: ws?.push }, 'workspace finished');
    } else {
      await workspace?.abandon();
    }
    return { result };
  }

  /** Reports the outcome, retrying through outages, until the server takes it or refuses it for good. */
  private async report(grant: Grant, current: CurrentTask, outcome: { result?: TaskResult; error?: Error }, taskLog: Logger): Promise<void> {
    const { client } = this.options;
    if (current.stopReason === 'lease_lost') {
      taskLog.warn('the lease was lost: the task is someone else’s now; nothing reported');
      return;
    }
    if (current.stopReason === 'lease_expired') {
      // Given back at once if the server can be reached now; if not, its lease lapses.
      try {
        await client.release(grant.task_id, grant.attempt, RELEASE_AFTER_FENCE_TIMEOUT_MS);
        taskLog.warn('the command was stopped when the lease ran out unanswered: the task is given back');
      } catch (error) {
        taskLog.warn({ err: (error as Error).message }, 'the command was stopped when the lease ran out unanswered: the task goes to another agent once its lease lapses');
      }
      return;
    }
    let send: () => Promise<void>;
    let what: string;
    if (current.stopReason === 'shutdown') {
      what = 'release';
      send = () => client.release(grant.task_id, grant.attempt);
    } else if (current.stopReason === 'cancel') {
      what = 'fail (cancelled)';
      send = () => client.fail(grant.task_id, grant.attempt, 'stopped: the task was cancelled', undefined, current.output.peek().output);
    } else if (outcome.result && outcome.result.outcome !== 'fail') {
      const { outcome: kind, summary, branch, rev, details } = outcome.result;
      const report: ResultReport = { outcome: kind, summary: clip(summary || kind, 100_000), ...(branch ? { branch } : {}), ...(rev ? { rev } : {}), ...(details ? { details } : {}) };
      what = `complete (${kind})`;
      send = () => client.complete(grant.task_id, grant.attempt, report, current.output.peek().output);
    } else {
      const summary = outcome.result ? outcome.result.summary : `the command could not run: ${outcome.error?.message ?? 'unknown error'}`;
      what = 'fail';
      send = () => client.fail(grant.task_id, grant.attempt, clip(summary || 'failed', 100_000), outcome.result?.details, current.output.peek().output);
    }
    const deadline = Date.now() + (this.options.reportRetryMs ?? 10 * 60_000);
    let delay = this.options.backoff?.initialMs ?? 500;
    /** A try whose answer never came may have been applied all the same. */
    let unanswered = false;
    for (;;) {
      try {
        await send();
        taskLog.info(`reported: ${what}`);
        return;
      } catch (error) {
        if (error instanceof HttpError && error.leaseLost) {
          const refusal = readRefusedReport(what, error.code, unanswered);
          taskLog[refusal.level]({ err: error.message, code: error.code }, refusal.message);
          return;
        }
        if (isTransient(error)) unanswered = true; // no answer, or a gateway's: it may have reached the task all the same
        if (!isTransient(error) || Date.now() > deadline) {
          taskLog.error({ err: (error as Error).message }, `could not report ${what}; giving up`);
          return;
        }
        taskLog.warn({ err: (error as Error).message }, `could not report ${what} yet; retrying`);
        await sleep(delay);
        delay = Math.min(delay * 2, this.options.backoff?.maxMs ?? 30_000, REPORT_RETRY_MAX_MS);
      }
    }
  }
}

/**
 * What a report refused with 409/404 means, said as it happened. After a try whose answer never
 * came (a timeout, a gateway's 5xx), `task_closed` most likely means that try was applied: the
 * report's own Update closed the task. Otherwise the task went on without this agent.
 */
export function readRefusedReport(what: string, code: string | undefined, unanswered: boolean): { level: 'info' | 'warn'; message: string } {
  if (unanswered && code === 'task_closed') {
    return { level: 'info', message: `reported: ${what} — most likely by an earlier try whose answer was lost: the task is closed` };
  }
  return { level: 'warn', message: `could not report ${what}: the task is no longer ours (${code ?? 'refused'})` };
}

/**
 * The pull agent's own fence: by its own clock, the lease is surely still its own until the time
 * it sent its last answered heartbeat plus the lease the answer said was left (the workflow
 * answered later than that). Without an answered heartbeat for that long (a partition, an API
 * outage), the command is stopped (with the kill grace to spare) before the lease can lapse and
 * the task go to another agent: two runs of one task never overlap. Before the first answer, the
 * grant's lease counts from when it arrived, less a third for the time the answer travelled.
 */
class LeaseFence {
  private until: number;
  private lastAnswerAt = Date.now();
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** How long before the lease runs out the command is stopped: time for SIGTERM, then SIGKILL. */
  private readonly marginMs: number;

  constructor(
    leaseMs: number,
    killGraceMs: number,
    private readonly onExpired: () => void,
  ) {
    this.until = Date.now() + Math.floor((leaseMs * 2) / 3);
    this.marginMs = Math.min(killGraceMs + 1_000, Math.floor(leaseMs / 4));
    this.arm();
  }

  get unansweredMs(): number {
    return Date.now() - this.lastAnswerAt;
  }

  extend(sentAt: number, leaseMsLeft: number): void {
    this.lastAnswerAt = Date.now();
    this.until = Math.max(this.until, sentAt + leaseMsLeft);
    this.arm();
  }

  /** The command has ended: nothing left to fence. */
  stop(): void {
    this.stopped = true;
    this.disarm();
  }

  private disarm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private arm(): void {
    this.disarm();
    if (this.stopped) return;
    this.timer = setTimeout(() => this.onExpired(), Math.max(0, this.until - this.marginMs - Date.now()));
    this.timer.unref?.();
  }
}

/**
 * The command's output not yet uploaded. Each heartbeat carries what came since the last answered
 * one (the task keeps the latest part as its live log); a burst larger than the buffer is cut to
 * its latest part, with a note of how much was left out.
 */
export class PendingOutput {
  private text = '';
  /** Offsets in the whole output: where `text` begins, and how far uploads were answered. */
  private start = 0;
  private acked = 0;

  constructor(private readonly limit = 32 * 1024) {}

  add(chunk: string): void {
    this.text += chunk;
    if (this.text.length > this.limit) {
      this.start += this.text.length - this.limit;
      this.text = this.text.slice(-this.limit);
    }
  }

  /** What to upload now, and the offset to acknowledge once it was taken. */
  peek(): { output: string | undefined; upTo: number } {
    const upTo = this.start + this.text.length;
    if (!this.text) return { output: undefined, upTo };
    const skipped = this.start - this.acked;
    return { output: skipped > 0 ? `[… ${skipped} characters of output not uploaded …]\n${this.text}` : this.text, upTo };
  }

  ack(upTo: number): void {
    this.acked = Math.max(this.acked, upTo);
    const taken = upTo - this.start;
    if (taken <= 0) return;
    this.text = this.text.slice(taken);
    this.start = upTo;
    this.acked = upTo;
  }
}
