// The host registry: where worker processes publish the presence of their SSH hosts (online or
// offline, slots used), so that the stateless API can answer `GET /api/v1/hosts` and stats. One
// long-running entity workflow per namespace. Every report replaces the sender's previous one;
// the latest state is also kept in the workflow's memo, which readers get from a describe() without
// needing a worker. Deterministic code only.
import * as wf from '@temporalio/workflow';
import { DROVER_ENTITY_ID_PREFIX } from '../names';

export const HOST_REGISTRY_WORKFLOW_TYPE = 'hostRegistryWorkflow';
export const HOST_REGISTRY_WORKFLOW_ID = `${DROVER_ENTITY_ID_PREFIX}host-registry`;
/** The memo field holding HostRegistryState. */
export const HOST_REGISTRY_MEMO = 'hosts';

export interface HostPresence {
  id: string;
  address: string;
  types: string[];
  slots: number;
  slotsUsed: number;
  online: boolean;
  /** When the last health check ended, and why it failed. */
  checkedAt?: string;
  error?: string;
  /** Since when `online` has had its value. */
  since?: string;
}

export interface HostPresenceReport {
  /** The reporting worker process. */
  worker: string;
  at: string;
  /** Reports older than this (the worker stopped reporting) no longer count as online. */
  ttlMs: number;
  hosts: HostPresence[];
  /** The worker is shutting down: its hosts are offline. */
  final?: boolean;
}

export interface HostRegistryState {
  reports: Record<string, HostPresenceReport>;
}

export const hostPresenceSignal = wf.defineSignal<[HostPresenceReport]>('hostPresence');
export const hostRegistryQuery = wf.defineQuery<HostRegistryState>('hostRegistry');

const MAX_HISTORY_EVENTS = 2_000;
/** Reports of workers silent for this many TTLs are dropped altogether. */
const FORGET_AFTER_TTLS = 20;

export async function hostRegistryWorkflow(args: { state?: HostRegistryState } = {}): Promise<void> {
  const state: HostRegistryState = args.state ?? { reports: {} };
  let dirty = true;

  wf.setHandler(hostRegistryQuery, () => state);
  wf.setHandler(hostPresenceSignal, (report) => {
    const previous = state.reports[report.worker];
    if (previous && previous.at > report.at) return; // a late, older report
    state.reports[report.worker] = report;
    dirty = true;
  });

  for (;;) {
    await wf.condition(() => dirty);
    dirty = false;
    const now = Date.now();
    for (const [worker, report] of Object.entries(state.reports)) {
      if (now - Date.parse(report.at) > report.ttlMs * FORGET_AFTER_TTLS) delete state.reports[worker];
    }
    wf.upsertMemo({ [HOST_REGISTRY_MEMO]: state });
    const info = wf.workflowInfo();
    if (info.continueAsNewSuggested || info.historyLength >= MAX_HISTORY_EVENTS) {
      await wf.condition(wf.allHandlersFinished);
      await wf.continueAsNew<typeof hostRegistryWorkflow>({ state });
    }
  }
}
