// Host presence across processes. Worker processes publish their SSH hosts' state (online,
// slots used) to the host registry workflow; the API, which keeps no state, reads it back from
// the registry's memo for `GET /api/v1/hosts` and the stats.
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Client } from '@temporalio/client';
import { WorkflowNotFoundError } from '@temporalio/common';
import { BOOKKEEPING_START } from './workflows/priority';
import {
  HOST_REGISTRY_MEMO,
  HOST_REGISTRY_WORKFLOW_ID,
  HOST_REGISTRY_WORKFLOW_TYPE,
  hostPresenceSignal,
  type HostPresence,
  type HostPresenceReport,
  type HostRegistryState,
} from './workflows/host-registry';

export type { HostPresence, HostPresenceReport } from './workflows/host-registry';

/** What `GET /api/v1/hosts` says about one host. */
export interface HostView {
  id: string;
  address?: string;
  types: string[];
  slots: number;
  slotsUsed: number;
  online: boolean;
  /** Why it is offline, when it is. */
  reason?: string;
  checkedAt?: string;
  since?: string;
  /** The worker process that runs it. */
  worker?: string;
  reportedAt?: string;
}

export interface HostStats {
  total: number;
  online: number;
  offline: number;
  slots: number;
  slotsUsed: number;
}

/** Reads the registry's latest state (no worker needed: it is in the memo). */
export async function readHostRegistry(client: Client): Promise<HostRegistryState> {
  try {
    const description = await client.workflow.getHandle(HOST_REGISTRY_WORKFLOW_ID).describe();
    const state = description.memo?.[HOST_REGISTRY_MEMO] as HostRegistryState | undefined;
    return state && typeof state === 'object' && state.reports ? state : { reports: {} };
  } catch (error) {
    if (error instanceof WorkflowNotFoundError) return { reports: {} };
    throw error;
  }
}

/**
 * Every host: those that workers report, and those in the config that no worker reports
 * (offline). A report whose worker has gone quiet for longer than its TTL counts as offline.
 */
export async function listHosts(
  client: Client,
  configured: ReadonlyArray<{ id: string; address: string; types: string[]; slots: number }> = [],
  now: number = Date.now(),
): Promise<HostView[]> {
  const state = await readHostRegistry(client);
  const views = new Map<string, HostView>();
  const reports = Object.values(state.reports).sort((a, b) => a.at.localeCompare(b.at));
  for (const report of reports) {
    const stale = now - Date.parse(report.at) > report.ttlMs;
    for (const host of report.hosts) {
      const online = host.online && !stale && !report.final;
      const view: HostView = {
        id: host.id,
        address: host.address,
        types: host.types,
        slots: host.slots,
        slotsUsed: online ? host.slotsUsed : 0,
        online,
        ...(online
          ? {}
          : { reason: report.final ? 'its worker stopped' : stale ? `no report from its worker since ${report.at}` : (host.error ?? 'health check failed') }),
        checkedAt: host.checkedAt,
        since: host.since,
        worker: report.worker,
        reportedAt: report.at,
      };
      const previous = views.get(host.id);
      // The same host reported by two workers: an online report wins over an offline one.
      if (!previous || (!previous.online && online) || previous.online === online) views.set(host.id, view);
    }
  }
  for (const host of configured) {
    if (!views.has(host.id)) {
      views.set(host.id, { id: host.id, address: host.address, types: host.types, slots: host.slots, slotsUsed: 0, online: false, reason: 'no worker reports this host' });
    }
  }
  return [...views.values()].sort((a, b) => a.id.localeCompare(b.id));
}

export function hostStats(hosts: readonly HostView[]): HostStats {
  const online = hosts.filter((h) => h.online);
  return {
    total: hosts.length,
    online: online.length,
    offline: hosts.length - online.length,
    slots: online.reduce((n, h) => n + h.slots, 0),
    slotsUsed: online.reduce((n, h) => n + h.slotsUsed, 0),
  };
}

export interface PresencePublisherOptions {
  client: Client;
  /** The current state of this worker's hosts. */
  snapshot(): HostPresence[];
  /** How often the state is sampled for changes. */
  sampleIntervalMs?: number;
  /** Unchanged state is re-sent this often, so readers know the worker is alive. */
  keepaliveMs?: number;
  onError?(error: unknown): void;
}

/** Publishes a worker process's host presence: on every change, and as a keepalive. */
export class PresencePublisher {
  readonly worker = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  private last = '';
  private lastSentAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private sending: Promise<void> = Promise.resolve();
  private readonly keepaliveMs: number;

  constructor(private readonly options: PresencePublisherOptions) {
    this.keepaliveMs = options.keepaliveMs ?? 15_000;
  }

  start(): void {
    this.tick();
    this.timer = setInterval(() => this.tick(), this.options.sampleIntervalMs ?? 500);
    this.timer.unref();
  }

  /** Publishes now if anything changed (or the keepalive is due). */
  tick(): void {
    const hosts = this.options.snapshot();
    const key = JSON.stringify(hosts.map(({ checkedAt: _c, ...rest }) => rest));
    if (key === this.last && Date.now() - this.lastSentAt < this.keepaliveMs) return;
    this.last = key;
    this.lastSentAt = Date.now();
    void this.send({ worker: this.worker, at: new Date().toISOString(), ttlMs: this.keepaliveMs * 3, hosts });
  }

  /** Stops publishing and tells readers that this worker's hosts are gone. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.send({ worker: this.worker, at: new Date().toISOString(), ttlMs: this.keepaliveMs * 3, hosts: this.options.snapshot(), final: true });
  }

  private send(report: HostPresenceReport): Promise<void> {
    // One at a time, in order.
    this.sending = this.sending.then(async () => {
      try {
        await this.options.client.workflow.signalWithStart(HOST_REGISTRY_WORKFLOW_TYPE, {
          workflowId: HOST_REGISTRY_WORKFLOW_ID,
          ...BOOKKEEPING_START,
          args: [{}],
          signal: hostPresenceSignal,
          signalArgs: [report],
          staticSummary: 'Drover host registry: presence of SSH hosts, reported by worker processes',
        });
      } catch (error) {
        this.last = ''; // try again at the next tick
        this.options.onError?.(error);
      }
    });
    return this.sending;
  }
}

/**
 * Per-host presence for the API (`buildApp({ hostPresence })`): reads the registry at most once
 * per `cacheMs` however many hosts are asked about. A host no worker reports is offline; when the
 * registry cannot be read, the answer is undefined (the API says it cannot tell).
 */
export function createHostPresence(
  client: Client,
  options: { cacheMs?: number } = {},
): (hostId: string) => Promise<{ online: boolean; slotsUsed: number; reason?: string }> {
  const cacheMs = options.cacheMs ?? 1_000;
  let cached: { at: number; hosts: Promise<Map<string, HostView>> } | undefined;
  const load = () => {
    if (!cached || Date.now() - cached.at > cacheMs) {
      const hosts = listHosts(client).then((list) => new Map(list.map((h) => [h.id, h])));
      cached = { at: Date.now(), hosts };
      hosts.catch(() => {
        cached = undefined;
      });
    }
    return cached.hosts;
  };
  return async (hostId) => {
    const view = (await load()).get(hostId);
    if (!view) return { online: false, slotsUsed: 0, reason: 'no worker reports this host' };
    return { online: view.online, slotsUsed: view.slotsUsed, ...(view.reason ? { reason: view.reason } : {}) };
  };
}
