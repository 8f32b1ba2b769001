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

export async function connectClient(config: TemporalConfig): Promise<{ client: Client; connection: Connection }> {
  const connection = await Connection.connect({ address: config.address, tls: tlsOptions(config), apiKey: config.apiKey });
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
  await connection.operatorService.addSearchAttributes({
    namespace,
    searchAttributes: Object.fromEntries(
      missing.map((d) => [d.name, d.type === 'Int' ? IndexedValueType.INDEXED_VALUE_TYPE_INT : IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD]),
    ),
  });
  return missing.map((d) => d.name);
}
