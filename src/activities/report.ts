// Delivery of task events to where people look: the Forgejo comment and the callback URL
// (src/activities/sinks.ts). Without any sink configured, events are only logged.
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { taskTallyTellerFor } from '../task-tally';
import type { ReportActivities, TaskEvent } from '../workflows/activity-types';
import type { TaskTransition } from '../workflows/task-tally-book';

export type TaskEventSink = (event: TaskEvent) => Promise<void>;

/** Sinks mark permanent failures (`permanent: true`): a retry would fail the same way. */
function isPermanent(error: unknown): boolean {
  if (error instanceof ApplicationFailure) return error.nonRetryable === true;
  return (error as { permanent?: boolean } | undefined)?.permanent === true;
}

/** Indexes of the sinks an earlier try of this delivery already completed (heartbeat details). */
function doneBefore(): Set<number> {
  try {
    const details = Context.current().info.heartbeatDetails as { done?: unknown } | undefined;
    return new Set(Array.isArray(details?.done) ? details.done.filter((n): n is number => typeof n === 'number') : []);
  } catch {
    return new Set();
  }
}

function recordDone(done: Set<number>): void {
  try {
    Context.current().heartbeat({ done: [...done] });
  } catch {
    // not in an activity (unit tests)
  }
}

export function createReportActivities(sinks: TaskEventSink[] = []): ReportActivities {
  return {
    async reportTaskEvent(event: TaskEvent): Promise<void> {
      // Every sink gets its try, even when another fails; a failure makes Temporal retry the
      // delivery later, skipping sinks already done. Transient failures (Forgejo down, 5xx,
      // network) retry without limit; if only permanent ones remain (a deleted issue, a callback
      // answering 404), the delivery gives up so that the task can still close.
      const done = doneBefore();
      const failures: Array<{ index: number; error: unknown }> = [];
      for (const [index, sink] of sinks.entries()) {
        if (done.has(index)) continue;
        try {
          await sink(event);
          done.add(index);
          recordDone(done);
        } catch (error) {
          failures.push({ index, error });
        }
      }
      if (failures.length === 0) return;
      const message = failures.map(({ error }) => (error instanceof Error ? error.message : String(error))).join('; ');
      const what = `${event.type} of ${event.status.taskId}`;
      if (failures.every(({ error }) => isPermanent(error))) {
        throw ApplicationFailure.nonRetryable(`report ${what} failed for good: ${message}`, 'report_failed_permanently');
      }
      throw ApplicationFailure.retryable(`report ${what} failed, will retry: ${message}`, 'report_failed');
    },

    // Needs only Temporal: retried (by the workflow's retry policy) until the tally has it, or is gone.
    async tellTaskTally(transition: TaskTransition): Promise<void> {
      const { client, info, cancellationSignal } = Context.current();
      // One id per tell, the same on every try (a tally takes a tell id once per run): the task's
      // run and the activity's id (or, for an activity started on its own, its run id).
      await taskTallyTellerFor(client).tell({ tellId: `${info.workflowExecution?.runId ?? info.activityRunId}/${info.activityId}`, transition }, cancellationSignal);
    },
  };
}
