#!/usr/bin/env node
// `drover`: one CLI for every process (see README).
import { existsSync, mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import { ConfigError, loadConfig } from './config';
import { startDevServer } from './dev-server';
import { createLogger } from './log';
import {
  connectClient,
  IDLE_PROBE_MS,
  connectNative,
  installTemporalRuntimeLog,
  registerSearchAttributes,
  routeTemporalRuntimeLog,
  SearchAttributesFullError,
} from './temporal-connection';
import { ensureTemporalCli } from './temporal-cli';
import { startWorkers } from './workers/main';
import { buildApp } from './api/app';
import { registerAgentCommand } from './agent/command';

/** `drover dev` uses this example config when none is given. */
const DEV_CONFIG = fileURLToPath(new URL('../examples/drover.dev.yaml', import.meta.url));

const program = new Command('drover').description('Durable dispatcher for fleets of AI coding agents, on Temporal');
const configOption = () => new Option('-c, --config <file>', 'YAML config file').env('DROVER_CONFIG');

function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolvePromise) => {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => resolvePromise(signal));
  });
}

program
  .command('temporal-cli')
  .description('find or build the pinned Temporal CLI and print its path')
  .action(() => {
    const path = ensureTemporalCli();
    console.log(path ?? '(none: @temporalio/testing will download it)');
  });

program
  .command('setup-search-attributes')
  .description("register Drover's search attributes on the configured Temporal cluster (idempotent)")
  .addOption(configOption())
  .action(async (opts: { config?: string }) => {
    const config = loadConfig(opts.config);
    const { connection } = await connectClient(config.temporal);
    const added = await registerSearchAttributes(connection, config.temporal.namespace);
    console.log(added.length ? `registered: ${added.join(', ')}` : 'search attributes already registered');
    await connection.close();
  });

program
  .command('worker')
  .description('run the workflow worker and the SSH host workers of the config')
  .addOption(configOption())
  .action(async (opts: { config?: string }) => {
    const config = loadConfig(opts.config);
    const log = createLogger(config.log.level);
    routeTemporalRuntimeLog(log); // the SDK's and its core's logs, from the first NativeConnection on
    // Its pollers are the Rust core's, which logs no recovery: an idle probe puts an outage and its
    // end in this process's log, as the API's calls do there.
    const { client, connection, temporalHealth } = await connectClient(config.temporal, { log, idleProbeIntervalMs: IDLE_PROBE_MS });
    const workers = await startWorkers({ config, client, connect: () => connectNative(config.temporal), log, temporalHealth });
    const signal = await Promise.race([untilSignal(), workers.done.then(() => undefined)]);
    if (signal) log.info({ signal }, 'shutting down');
    await workers.shutdown();
    temporalHealth.stop();
    await connection.close();
  });

program
  .command('api')
  .description('run the HTTP API: Forgejo webhooks, the pull-agent protocol, the coordinator and operator endpoints')
  .addOption(configOption())
  .action(async (opts: { config?: string }) => {
    const config = loadConfig(opts.config);
    const log = createLogger(config.log.level);
    routeTemporalRuntimeLog(log); // the pull queues' workers' logs, once an agent waits
    const { client, connection, temporalHealth } = await connectClient(config.temporal, { log, idleProbeIntervalMs: IDLE_PROBE_MS });
    const app = await buildApp({ config, client, logger: log, temporalHealth });
    const address = await app.listen({ host: config.api.host, port: config.api.port });
    log.info({ address, docs: `${address}/docs`, temporal: config.temporal.address }, 'drover api listening');
    const signal = await untilSignal();
    log.info({ signal }, 'shutting down');
    await app.close();
    temporalHealth.stop();
    await connection.close();
  });

program
  .command('dev')
  .description('everything in one process tree on an embedded Temporal dev server (SQLite on disk, Web UI)')
  .addOption(configOption())
  .option('--db <file>', 'dev server database', '.drover/dev.sqlite')
  .option('--temporal-port <port>', 'dev server gRPC port', '7233')
  .option('--ui-port <port>', 'Temporal Web UI port', '8233')
  .action(async (opts: { config?: string; db: string; temporalPort: string; uiPort: string }) => {
    const config = loadConfig(opts.config ?? (existsSync(DEV_CONFIG) ? DEV_CONFIG : undefined));
    // The Web UI on the host people reach the API by (api.publicUrl), not a host of its own.
    config.api.temporalUiUrl ??= `${new URL(config.api.publicUrl).protocol}//${new URL(config.api.publicUrl).hostname}:${opts.uiPort}`;
    const log = createLogger(config.log.level);
    installTemporalRuntimeLog(log); // before the dev server, which starts the SDK's Runtime
    mkdirSync(resolve(opts.db, '..'), { recursive: true });
    log.info('starting the Temporal dev server (the first run builds the Temporal CLI: a few minutes)');
    const env = await startDevServer({ dbFilename: opts.db, port: Number(opts.temporalPort), uiPort: Number(opts.uiPort) });
    config.temporal.address = env.address;
    // A client of our own (not the dev server's): its calls feed the observer behind /readyz and /metrics.
    const { client, connection, temporalHealth } = await connectClient(config.temporal, { log, idleProbeIntervalMs: IDLE_PROBE_MS });
    const workers = await startWorkers({ config, client, connect: () => connectNative(config.temporal), log, temporalHealth });
    const app = await buildApp({ config, client, logger: log, temporalHealth });
    const api = await app.listen({ host: config.api.host, port: config.api.port });
    console.log(
      `drover dev: API ${api} · OpenAPI UI ${api}/docs · Temporal ${env.address} · Web UI http://localhost:${opts.uiPort} · database ${opts.db}`,
    );
    await Promise.race([untilSignal(), workers.done]);
    await app.close();
    await workers.shutdown();
    temporalHealth.stop();
    await connection.close();
    await env.teardown();
  });

// `drover agent`: the reference pull agent (src/agent).
registerAgentCommand(program);

program.parseAsync().catch((error: unknown) => {
  if (error instanceof ConfigError) {
    console.error(error.message);
    process.exit(2);
  }
  if (error instanceof SearchAttributesFullError) {
    console.error(error.message);
    process.exit(1);
  }
  console.error(error);
  process.exit(1);
});
