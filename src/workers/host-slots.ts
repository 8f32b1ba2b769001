// One slot limit per SSH host, shared by all the Temporal workers of that host (one per agent
// type it serves, plus its own queue for assigned tasks).
//
// Temporal asks a slot supplier for a permit before every poll. The supplier below hands out
// permits only while the host is online and has a free slot, so a full or offline host polls
// nothing and the task stays on the queue for another host. The slot itself is taken by the
// attempt activity when it starts: several queues may poll at once while one slot is free, and
// an attempt that finds the host full declines, which makes the workflow dispatch it again.
import type { CustomSlotSupplier, SlotInfo, SlotPermit } from '@temporalio/worker';

export class HostSlots {
  private used = 0;
  private isOnline = true;
  private waiters = new Set<() => void>();
  private handOffs = new Map<string, { item: { release: () => void }; timer: NodeJS.Timeout }>();

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`slots must be a positive integer, got ${capacity}`);
  }

  get inUse(): number {
    return this.used;
  }

  get online(): boolean {
    return this.isOnline;
  }

  get canTakeWork(): boolean {
    return this.isOnline && this.used < this.capacity;
  }

  setOnline(online: boolean): void {
    this.isOnline = online;
    this.wake();
  }

  /** Takes a slot; returns its release function, or undefined when the host is full or offline. */
  tryAcquire(): (() => void) | undefined {
    return this.canTakeWork ? this.take() : undefined;
  }

  /**
   * Takes a slot whatever the count: a run already under way on the host (re-attached after a
   * restart) is counted, even if that puts the host over its slots for a while.
   */
  forceAcquire(): () => void {
    return this.take();
  }

  private take(): () => void {
    this.used += 1;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.used -= 1;
      this.wake();
    };
  }

  /**
   * Keeps a slot (and whatever goes with it) for the activity that runs a claimed attempt, which
   * comes next on the host's own queue; released with `dispose` when it does not come in time.
   */
  handOff<T>(key: string, item: T & { release: () => void }, timeoutMs: number, dispose: (item: T) => void = () => {}): void {
    this.takeHandOff(key)?.release();
    const timer = setTimeout(() => {
      if (this.handOffs.get(key)?.item !== item) return;
      this.handOffs.delete(key);
      item.release();
      dispose(item);
    }, timeoutMs);
    timer.unref?.();
    this.handOffs.set(key, { item, timer });
  }

  takeHandOff<T>(key: string): (T & { release: () => void }) | undefined {
    const entry = this.handOffs.get(key);
    if (!entry) return undefined;
    clearTimeout(entry.timer);
    this.handOffs.delete(key);
    return entry.item as T & { release: () => void };
  }

  /** Resolves once the host could take work; rejects with the signal's reason when `signal` aborts (the SDK's contract for reserveSlot). */
  waitUntilAvailable(signal?: AbortSignal): Promise<void> {
    if (this.canTakeWork) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!this.canTakeWork) return;
        cleanup();
        resolve();
      };
      const onAbort = () => {
        cleanup();
        reject(signal?.reason);
      };
      const cleanup = () => {
        this.waiters.delete(check);
        signal?.removeEventListener('abort', onAbort);
      };
      this.waiters.add(check);
      signal?.addEventListener('abort', onAbort, { once: true });
      if (signal?.aborted) onAbort();
    });
  }

  /** The SDK slot supplier that gates polling on this host's availability. */
  pollGate<SI extends SlotInfo>(): CustomSlotSupplier<SI> {
    return {
      type: 'custom',
      reserveSlot: async (_ctx, abortSignal): Promise<SlotPermit> => {
        await this.waitUntilAvailable(abortSignal);
        return {};
      },
      tryReserveSlot: () => (this.canTakeWork ? {} : null),
      markSlotUsed: () => {},
      releaseSlot: () => {},
    };
  }

  private wake(): void {
    for (const waiter of [...this.waiters]) waiter();
  }
}
