// The Temporal workers of one SSH host: one on the typed queue of each agent type it serves and
// one on its own queue (assigned tasks), all behind the host's single slot limit.
import type { Client } from '@temporalio/client';
import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import { RenewableWorkers, type RenewalLog } from './renewable-workers';
import { createAttemptActivities, type AttemptDeps } from '../activities/attempt';
import type { Runner } from '../activities/runner';
import { hostQueue, runQueue, typeQueue } from '../names';
import { HostSlots } from './host-slots';

export interface HostWorkerOptions {
  /**
   * Opens a connection for this host alone. The SDK refuses two workers on one task queue over
   * the same connection, and every host of a type polls that type's queue, so each host has its
   * own connection (closed by shutdown(); opened again by renew()).
   */
  connect: () => Promise<NativeConnection>;
  namespace: string;
  client: Client;
  hostId: string;
  types: string[];
  slots: number;
  runner: Runner;
  log?: RenewalLog;
  /** Tuning of the attempt activities (heartbeat interval, log bounds). */
  activityOptions?: Pick<AttemptDeps, 'heartbeatIntervalMs' | 'logHeadChars' | 'logTailChars' | 'handOffMs'>;
}

type ActivitySlotSupplier = NonNullable<Extract<NonNullable<WorkerOptions['tuner']>, { activityTaskSlotSupplier?: unknown }>['activityTaskSlotSupplier']>;

export class HostWorkers {
  private running: Promise<void> | undefined;

  constructor(
    readonly hostId: string,
    readonly types: string[],
    readonly slots: HostSlots,
    private readonly workers: RenewableWorkers,
    private readonly ended: Array<Promise<void>>,
    private readonly shuttingDown: AbortController,
  ) {}

  static async create(options: HostWorkerOptions): Promise<HostWorkers> {
    const slots = new HostSlots(options.slots);
    const shuttingDown = new AbortController();
    const activities = createAttemptActivities({
      client: options.client,
      hostId: options.hostId,
      types: options.types,
      slots,
      runner: options.runner,
      shuttingDown: shuttingDown.signal,
      ...options.activityOptions,
    });
    const queues = [...options.types.map(typeQueue), hostQueue(options.hostId)];
    const workers = new RenewableWorkers({ connect: options.connect, log: options.log });
    const worker = (taskQueue: string, activityTaskSlotSupplier: () => ActivitySlotSupplier, extra: Partial<WorkerOptions> = {}) =>
      workers.add(taskQueue, (connection) =>
        Worker.create({
          connection,
          namespace: options.namespace,
          taskQueue,
          activities,
          identity: `drover-host:${options.hostId}@${taskQueue}`,
          tuner: {
            activityTaskSlotSupplier: activityTaskSlotSupplier(),
            workflowTaskSlotSupplier: { type: 'fixed-size', numSlots: 1 },
            localActivityTaskSlotSupplier: { type: 'fixed-size', numSlots: 1 },
            nexusTaskSlotSupplier: { type: 'fixed-size', numSlots: 1 },
          },
          // At most one heartbeat write per 10 s (each is billed on Temporal Cloud); cancellation
          // comes back in their answers, so it reaches a runner within that.
          maxHeartbeatThrottleInterval: '10 seconds',
          defaultHeartbeatThrottleInterval: '10 seconds',
          shutdownGraceTime: '5 seconds',
          ...extra,
        }),
      );
    try {
      const started = await Promise.all([
        // Claims: polled only while the host can take work. One poll per queue: each open poll can
        // bring a task, and the host has few slots.
        ...queues.map((taskQueue) => worker(taskQueue, () => slots.pollGate(), { activityTaskPollerBehavior: { type: 'simple-maximum', maximum: 1 } })),
        // The runs of claimed attempts: never gated (each holds the slot its claim took). A worker
        // renewed after an outage leaves its runs to finish on it (shutdown() ends them at once,
        // detached, through `shuttingDown`).
        worker(runQueue(options.hostId), () => ({ type: 'fixed-size', numSlots: Math.max(8, options.slots * 4) }), { shutdownGraceTime: '1 day' }),
      ]);
      return new HostWorkers(options.hostId, options.types, slots, workers, started.map((s) => s.done), shuttingDown);
    } catch (error) {
      await workers.close();
      throw error;
    }
  }

  run(): Promise<void> {
    this.running ??= Promise.all(this.ended).then(() => undefined);
    return this.running;
  }

  /** Fresh pollers on the host's queues: Temporal is reachable again after an outage (see RenewableWorkers). */
  renew(): Promise<void> {
    return this.workers.renew();
  }

  /** Times the host's workers were renewed. */
  get renewCount(): number {
    return this.workers.renewCount;
  }

  /**
   * Stops polling, and leaves running agents alone: the attempts following them end at once, and
   * their next tries attach to the same runs (on this host's queue) once a worker is back.
   */
  async shutdown(): Promise<void> {
    this.shuttingDown.abort();
    await this.workers.close();
  }
}
