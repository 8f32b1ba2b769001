// Unit tests of an SSH host's shared slots and the poll gate built on them (no server).
import { describe, expect, test } from 'vitest';
import type { SlotInfo } from '@temporalio/worker';
import { HostSlots } from '../src/workers/host-slots';

const reserveContext = { slotType: 'activity' as const, taskQueue: 'q', workerIdentity: 'w', workerBuildId: '', isSticky: false };

describe('HostSlots', () => {
  test('slots are taken up to the capacity and only while online', () => {
    const slots = new HostSlots(1);
    const release = slots.tryAcquire();
    expect(release).toBeDefined();
    expect(slots.tryAcquire()).toBeUndefined();
    release!();
    slots.setOnline(false);
    expect(slots.tryAcquire()).toBeUndefined();
  });

  test('the poll gate waits for a free slot', async () => {
    const slots = new HostSlots(1);
    const release = slots.tryAcquire()!;
    let permitted = false;
    const permit = slots.pollGate<SlotInfo>().reserveSlot(reserveContext, new AbortController().signal).then(() => (permitted = true));
    await Promise.resolve();
    expect(permitted).toBe(false);
    release();
    await permit;
    expect(permitted).toBe(true);
  });

  test('an aborted reservation rejects with the abort reason, as the SDK expects of a slot supplier', async () => {
    // Anything else the SDK logs as "Error in custom slot supplier" at every shutdown of a full or offline host.
    const slots = new HostSlots(1);
    slots.setOnline(false);
    const abort = new AbortController();
    const reservation = slots.pollGate<SlotInfo>().reserveSlot(reserveContext, abort.signal);
    abort.abort();
    await expect(reservation).rejects.toBe(abort.signal.reason);
  });
});
