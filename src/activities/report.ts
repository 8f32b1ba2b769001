// Delivery of task events to where people look. The HTTP issue plugs in the Forgejo comment
// and the callback URL; without any sink configured, events are only logged.
import type { ReportActivities, TaskEvent } from '../workflows/activity-types';

export type TaskEventSink = (event: TaskEvent) => Promise<void>;

export function createReportActivities(sinks: TaskEventSink[] = []): ReportActivities {
  return {
    async reportTaskEvent(event: TaskEvent): Promise<void> {
      // Every sink must succeed; a failure makes Temporal retry the whole delivery later.
      for (const sink of sinks) await sink(event);
    },
  };
}
