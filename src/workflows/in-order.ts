// Messages sent one after another, each once the one before has ended, and counted until they
// end: what a workflow waits for before it closes or continues-as-new. Deterministic code only.
import * as wf from '@temporalio/workflow';

/**
 * Sends one after another, each once the one before has ended (a task's tally tells and reports,
 * the legacy tally's forwards to a shard).
 */
export class InOrder {
  /** Sent and not yet ended. */
  inFlight = 0;
  private last: Promise<void> = Promise.resolve();

  constructor(private readonly ended: () => void = () => undefined) {}

  /** `ordered` false sends at once, beside those before (task runs from before ORDERED_REPORTS_PATCH). */
  send(deliver: () => Promise<void>, ordered = true): void {
    this.inFlight += 1;
    // Not cancellable: a cancel requested through Temporal must not drop one on its way. A failed one is dropped.
    const send = () => wf.CancellationScope.nonCancellable(deliver);
    const sending = (ordered ? this.last.then(send) : send()).catch(() => undefined);
    this.last = sending;
    void sending.finally(() => {
      this.inFlight -= 1;
      this.ended();
    });
  }
}
