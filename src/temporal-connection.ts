// Connections to the Temporal cluster named in the config (dev server, self-hosted or Cloud).
import { readFileSync } from 'node:fs';
import { Client, Connection, defaultGrpcRetryOptions, makeGrpcRetryInterceptor, type ConnectionOptions } from '@temporalio/client';
import { NativeConnection, Runtime } from '@temporalio/worker';
import type { DroverConfig } from './config';
import type { Logger } from './log';
import { SEARCH_ATTRIBUTE_DEFINITIONS } from './names';
import { TemporalCallObserver, TemporalRuntimeLog, type HealthLog } from './temporal-health';
import proto from '@temporalio/proto';

type TemporalConfig = DroverConfig['temporal'];

function tlsOptions(config: TemporalConfig): ConnectionOptions['tls'] {
  if (!config.tls) return config.apiKey ? true : undefined;
  const read = (path: string | undefined) => (path ? readFileSync(path) : undefined);
  const cert = read(config.tls.certFile);
  const key = read(config.tls.keyFile);
  return {
    serverNameOverride: config.tls.serverName,
    serverRootCACertificate: read(config.tls.caFile),
    clientCertPair: cert && key ? { crt: cert, key } : undefined,
  };
}

/**
 * gRPC's reconnect backoff, bounded. By default it grows to two minutes: after a 30 s Temporal
 * outage, a client came back 12 s after the server did (measured with a proxy cut for 30 s); with
 * these, within half a second. Reconnect attempts to a server that is down cost it nothing.
 */
export const RECONNECT_CHANNEL_ARGS = { 'grpc.initial_reconnect_backoff_ms': 100, 'grpc.max_reconnect_backoff_ms': 500 } as const;

/** How long the observer's probe (while Temporal is unreachable) waits for an answer. */
const PROBE_DEADLINE_MS = 1_000;
/**
 * How long a Drover process goes without a call of its client before it asks Temporal whether it
 * is there. Its workers' pollers are the SDK core's, unseen by the client: without the probe, an
 * outage and its end could go unnoticed, and the workers would not be renewed (RenewableWorkers).
 */
export const IDLE_PROBE_MS = 1_000;

/**
 * The API's Temporal client. Its calls are retried by the SDK's own interceptor, and each attempt's
 * status feeds `temporalHealth` (throttling, outages and reconnects in the log, /metrics and
 * /readyz); with `log`, the observer logs them.
 */
export async function connectClient(
  config: TemporalConfig,
  options: { log?: HealthLog; idleProbeIntervalMs?: number } = {},
): Promise<{ client: Client; connection: Connection; temporalHealth: TemporalCallObserver }> {
  const temporalHealth = new TemporalCallObserver({ target: config.address, log: options.log, idleProbeIntervalMs: options.idleProbeIntervalMs });
  const connection = await Connection.connect({
    address: config.address,
    tls: tlsOptions(config),
    apiKey: config.apiKey,
    channelArgs: { ...RECONNECT_CHANNEL_ARGS },
    // Retries outside, the observer inside: it sees every attempt.
    interceptors: [makeGrpcRetryInterceptor(defaultGrpcRetryOptions()), temporalHealth.interceptor()],
  });
  temporalHealth.watch(async () => {
    try {
      await connection.withDeadline(Date.now() + PROBE_DEADLINE_MS, () => connection.workflowService.getSystemInfo({}));
    } catch (error) {
      if (/Channel has been shut down/i.test((error as Error).message ?? '')) temporalHealth.stop(); // closed: nothing to watch
      throw error;
    }
  });
  return { connection, client: new Client({ connection, namespace: config.namespace }), temporalHealth };
}

/** Set by routeTemporalRuntimeLog until connectNative installs it. */
let runtimeLog: Logger | undefined;

/**
 * Routes the Temporal SDK's own logs (workers, activities, workflows, and the Rust core's warnings
 * such as a poll retried while the server is down) to `log`, rate-limiting core's warnings.
 * Without it the core writes its warnings to stderr in its own format, and the SDK its logs as
 * plain text. Installs the SDK Runtime now: before a dev server or the first NativeConnection.
 * A Runtime whose logs are forwarded keeps the process alive until its last native object is
 * closed, so a process that may never open one uses `routeTemporalRuntimeLog`. False when a
 * Runtime exists already (tests).
 */
export function installTemporalRuntimeLog(log: Logger): boolean {
  runtimeLog = undefined;
  try {
    Runtime.install({
      logger: new TemporalRuntimeLog(log.child({ component: 'temporal-sdk' })),
      telemetryOptions: { logging: { filter: { core: 'WARN', other: 'ERROR' }, forward: {} } },
    });
    return true;
  } catch (error) {
    if ((error as Error).name === 'IllegalStateError') return false;
    throw error;
  }
}

/** As installTemporalRuntimeLog, when connectNative opens the first NativeConnection (`drover api` may never). */
export function routeTemporalRuntimeLog(log: Logger): void {
  runtimeLog = log;
}

/**
 * The workers' connection (the SDK's Rust core). NativeConnection.connect takes no channel
 * arguments and no retry settings: the core retries polls on its own (backoff up to about 10 s
 * per poller; its pollers came back 0.02–3.4 s after a dev server that had been down for 45 s
 * answered again).
 */
export function connectNative(config: TemporalConfig): Promise<NativeConnection> {
  if (runtimeLog) installTemporalRuntimeLog(runtimeLog);
  return NativeConnection.connect({ address: config.address, tls: tlsOptions(config), apiKey: config.apiKey });
}

/** Registers Drover's search attributes on a cluster; those already there are left alone. */
export async function registerSearchAttributes(connection: Connection, namespace: string): Promise<string[]> {
  const existing = await connection.operatorService.listSearchAttributes({ namespace });
  const present = new Set(Object.keys(existing.customAttributes ?? {}));
  const missing = SEARCH_ATTRIBUTE_DEFINITIONS.filter((d) => !present.has(d.name));
  if (missing.length === 0) return [];
  const IndexedValueType = proto.temporal.api.enums.v1.IndexedValueType;
  try {
    await connection.operatorService.addSearchAttributes({
      namespace,
      searchAttributes: Object.fromEntries(
        missing.map((d) => [d.name, d.type === 'Int' ? IndexedValueType.INDEXED_VALUE_TYPE_INT : IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD]),
      ),
    });
  } catch (error) {
    const full = /cannot have more than (\d+) search attributes? of type (\w+)/i.exec((error as Error).message ?? '');
    if (!full) throw error;
    throw new SearchAttributesFullError(namespace, Number(full[1]), full[2]!, existing.customAttributes ?? {}, missing);
  }
  await searchAttributesInUse(connection, namespace, missing.map((d) => d.name));
  return missing.map((d) => d.name);
}

/**
 * Waits until queries may name the new attributes: on SQL visibility the frontend answers
 * `no mapping defined for search attribute` for a second or so after they were added, and a
 * workflow started then with them fails.
 */
async function searchAttributesInUse(connection: Connection, namespace: string, names: string[], timeoutMs = 30_000): Promise<void> {
  const query = names.map((name) => `${name} IS NULL`).join(' AND ');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await connection.workflowService.countWorkflowExecutions({ namespace, query });
      return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

/** The namespace has no room for Drover's search attributes: says which are in use and what to do. */
export class SearchAttributesFullError extends Error {
  override readonly name = 'SearchAttributesFullError';
  constructor(
    readonly namespace: string,
    readonly limit: number,
    readonly type: string,
    inUse: Record<string, unknown>,
    missing: ReadonlyArray<{ name: string; type: string }>,
  ) {
    const typeName = (value: unknown) => String(proto.temporal.api.enums.v1.IndexedValueType[value as number] ?? value).replace(/^INDEXED_VALUE_TYPE_/, '').toLowerCase();
    const sameType = Object.entries(inUse)
      .filter(([, value]) => typeName(value) === type.toLowerCase())
      .map(([name]) => name)
      .sort();
    const needed = missing.filter((d) => d.type.toLowerCase() === type.toLowerCase()).map((d) => d.name);
    super(
      [
        `namespace ${namespace} has no room for Drover's search attributes: it allows ${limit} custom ${type} attributes,`,
        `and ${sameType.length} are in use (${sameType.join(', ') || 'none'}); Drover still needs ${needed.length} more (${needed.join(', ')}).`,
        `Remove ones nothing uses (temporal operator search-attribute remove --namespace ${namespace} --name <name>),`,
        'or give Drover a namespace of its own (temporal.namespace): on SQL visibility stores the slots per type are columns of the schema, not a setting.',
      ].join(' '),
    );
  }
}
