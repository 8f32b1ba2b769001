// A task's agent output for `GET /api/v1/tasks/{id}/logs`: live from the running SSH attempt's
// latest heartbeat (the attempt activity carries its bounded log there), and once an attempt has
// ended, the log tail the workflow kept in its status. Stateless: everything comes from Temporal.
import type { Client } from '@temporalio/client';
import type { AttemptHeartbeat } from './activities/attempt';
import type { AttemptRecord, TaskStatus } from './model';
import type { TaskClient } from './task-client';
import type { AttemptActivities } from './workflows/activity-types';

/** The activity that follows a claimed SSH attempt's run, whose heartbeats carry the log. */
const RUN_ACTIVITY: keyof AttemptActivities = 'runClaimed';

export interface AttemptLog {
  attempt: number;
  holder: AttemptRecord['holder'];
  mode: AttemptRecord['mode'];
  end: AttemptRecord['end'];
  log: string | null;
}

export interface TaskLogs {
  taskId: string;
  state: TaskStatus['state'];
  attempt: number;
  /** `live`: from the running attempt; `final`: the kept tail of the last attempt; `none`: no output (yet, or a pull agent's task). */
  source: 'live' | 'final' | 'none';
  /** The latest attempt's log. */
  log: string;
  /** Characters the running agent has written so far (live only; the log keeps a bounded part). */
  logChars?: number;
  /** The running agent's latest progress line (live only). */
  progress?: string;
  attempts: AttemptLog[];
}

/** The latest heartbeat details of the task's running SSH attempt, if one is running. */
export async function liveAttemptHeartbeat(client: Client, taskId: string): Promise<AttemptHeartbeat | undefined> {
  const description = await client.workflow.getHandle(taskId).describe();
  const pending = description.raw.pendingActivities ?? [];
  const attempt = pending.find((a) => a.activityType?.name === RUN_ACTIVITY && a.heartbeatDetails?.payloads?.length);
  if (!attempt) return undefined;
  const converter = client.options.loadedDataConverter;
  let payloads = attempt.heartbeatDetails!.payloads!;
  for (const codec of [...converter.payloadCodecs].reverse()) payloads = await codec.decode(payloads);
  const details = converter.payloadConverter.fromPayload<AttemptHeartbeat>(payloads[0]!);
  return details && typeof details === 'object' ? details : undefined;
}

export async function getTaskLogs(client: Client, tasks: TaskClient, taskId: string): Promise<TaskLogs> {
  const status = await tasks.status(taskId);
  const attempts: AttemptLog[] = status.attempts.map((a) => ({ attempt: a.attempt, holder: a.holder, mode: a.mode, end: a.end, log: a.logTail ?? null }));
  const base = { taskId, state: status.state, attempt: status.attempt, attempts };
  const current = status.attempts[status.attempts.length - 1];
  if (status.state === 'running' && current?.end === 'running') {
    if (status.mode === 'ssh_cli') {
      // An SSH run's latest output comes with its attempt's heartbeats.
      const live = await liveAttemptHeartbeat(client, taskId).catch(() => undefined);
      if (live) {
        return { ...base, source: 'live', log: live.log ?? '', ...(live.logChars !== undefined ? { logChars: live.logChars } : {}), progress: live.progress };
      }
    } else if (current.logTail !== undefined) {
      // A pull agent's, as it uploads it with its heartbeats.
      return { ...base, source: 'live', log: current.logTail, ...(current.logChars !== undefined ? { logChars: current.logChars } : {}) };
    }
  }
  const last = [...status.attempts].reverse().find((a) => a.logTail);
  if (last?.logTail) return { ...base, source: 'final', log: last.logTail, ...(last.logChars !== undefined ? { logChars: last.logChars } : {}) };
  return { ...base, source: 'none', log: '' };
}

/**
 * Follows a task's log: what is new since the caller's last look. `seen` is the attempt and the
 * characters of its output already given; what came since is `text`, or its latest part with a
 * note of the gap when more came than the live view keeps.
 */
export function newOutput(logs: TaskLogs, seen: { attempt: number; chars: number }): { text: string; seen: { attempt: number; chars: number } } {
  if (logs.source === 'none') return { text: '', seen };
  const attempt = logs.attempt;
  const from = attempt === seen.attempt ? seen.chars : 0;
  const total = logs.logChars ?? logs.log.length;
  const fresh = total - from;
  if (fresh <= 0) return { text: '', seen: { attempt, chars: from } };
  const text = fresh <= logs.log.length ? logs.log.slice(-fresh) : `[… ${fresh - logs.log.length} characters not shown …]\n${logs.log}`;
  const header = attempt !== seen.attempt && seen.attempt > 0 ? `[drover] attempt ${attempt}\n` : '';
  return { text: header + text, seen: { attempt, chars: total } };
}
