// Connections to the Temporal cluster named in the config (dev server, self-hosted or Cloud).
import { readFileSync } from 'node:fs';
import { Client, Connection, type ConnectionOptions } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import type { DroverConfig } from './config';
import { SEARCH_ATTRIBUTE_DEFINITIONS } from './names';
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
 * these, 1 s. Reconnect attempts to a server that is down cost it nothing.
 */
export const RECONNECT_CHANNEL_ARGS = { 'grpc.initial_reconnect_backoff_ms': 100, 'grpc.max_reconnect_backoff_ms': 1_000 } as const;

export async function connectClient(config: TemporalConfig): Promise<{ client: Client; connection: Connection }> {
  const connection = await Connection.connect({ address: config.address, tls: tlsOptions(config), apiKey: config.apiKey, channelArgs: { ...RECONNECT_CHANNEL_ARGS } });
  return { connection, client: new Client({ connection, namespace: config.namespace }) };
}

export function connectNative(config: TemporalConfig): Promise<NativeConnection> {
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
