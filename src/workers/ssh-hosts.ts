// The SSH hosts of a worker process: per configured host, its Temporal workers (typed queues and
// its own queue, behind one slot limit), the SSH runner, the health check that turns polling on
// and off, and the presence published for the API.
import type { WorkspaceSettings } from '../workspace/workspace';
import { readFileSync } from 'node:fs';
import type { Client } from '@temporalio/client';
import type { NativeConnection } from '@temporalio/worker';
import { durationMs, type HostConfig } from '../config';
import type { Logger } from '../log';
import { PresencePublisher, type HostPresence } from '../host-presence';
import { findEarlierSession, type SessionLookup } from '../sessions';
import type { SshTarget } from '../ssh/connection';
import { HostHealth } from '../ssh/health';
import { parseHostKeyPins } from '../ssh/host-key';
import { SshRunner, type SshRunnerHooks } from '../ssh/runner';
import { HostWorkers } from './host-worker';

export interface SshHost {
  config: HostConfig;
  workers: HostWorkers;
  health: HostHealth;
  runner: SshRunner;
}

export interface RunningSshHosts {
  hosts: SshHost[];
  presence: PresencePublisher;
  done: Promise<void>;
  shutdown(): Promise<void>;
  /** Fresh pollers on every host's queues: Temporal is reachable again after an outage. */
  renew(): Promise<void>;
}

export function loadPrivateKey(host: HostConfig, env: NodeJS.ProcessEnv = process.env): string | Buffer {
  if (host.privateKey) return host.privateKey;
  if (host.privateKeyEnv) {
    const key = env[host.privateKeyEnv];
    if (!key) throw new Error(`host ${host.id}: environment variable ${host.privateKeyEnv} (privateKeyEnv) is not set`);
    return key;
  }
  if (host.privateKeyPath) {
    try {
      return readFileSync(host.privateKeyPath);
    } catch (error) {
      throw new Error(`host ${host.id}: cannot read privateKeyPath ${host.privateKeyPath}: ${(error as Error).message}`);
    }
  }
  throw new Error(`host ${host.id}: no private key configured`);
}

export function sshTarget(host: HostConfig, env: NodeJS.ProcessEnv = process.env): SshTarget {
  return {
    hostId: host.id,
    address: host.address,
    port: host.port,
    user: host.user,
    privateKey: loadPrivateKey(host, env),
    passphrase: host.passphrase,
    hostKeyPins: parseHostKeyPins(host.hostKey),
    connectTimeoutMs: durationMs(host.connectTimeout ?? '10s'),
    keepaliveIntervalMs: 5_000,
  };
}

export async function startSshHosts(deps: {
  hosts: HostConfig[];
  client: Client;
  /** A Temporal connection per host (the SDK allows one worker per task queue per connection). */
  connect: () => Promise<NativeConnection>;
  namespace: string;
  log: Logger;
  /** Defaults to the visibility lookup of earlier tasks with the same session key. */
  sessions?: SessionLookup;
  /** Extra runner hooks (the benchmark listens for remote starts). */
  hooks?: Pick<SshRunnerHooks, 'onStarted'>;
  presence?: { keepaliveMs?: number; sampleIntervalMs?: number };
  /** How long a run found under way at start keeps its slot for its attempt to attach (tasks.fenceGrace). */
  fenceGraceMs?: number;
  /** Workspaces for tasks that name a repository (config.workspaces); none: agents run in each host's workdir. */
  workspaces?: Omit<WorkspaceSettings, 'workdir'>;
}): Promise<RunningSshHosts> {
  const { client, log } = deps;
  const sessions = deps.sessions ?? ((input) => findEarlierSession(client, input));
  const hosts: SshHost[] = [];
  try {
    for (const config of deps.hosts) {
      const hostLog = log.child({ host: config.id });
      const target = sshTarget(config);
      // Nothing is polled until the first health check passes (the workers start offline).
      const health = new HostHealth({
        target,
        intervalMs: durationMs(config.healthCheckInterval ?? '5s'),
        onChange: (state) => {
          workers.slots.setOnline(state.online);
          if (state.online) hostLog.info('host online');
          else hostLog.warn({ reason: state.error }, 'host offline');
        },
      });
      const runner = new SshRunner(
        {
          target,
          workdir: config.workdir,
          agents: config.agents,
          killGraceMs: durationMs(config.killGrace ?? '5s'),
          sessionResume: config.sessionResume ?? 'same-instance',
          ...(deps.workspaces ? { workspaces: deps.workspaces } : {}),
        },
        {
          sessions,
          onConnectFailure: (error) => health.reportFailure(error),
          onStarted: deps.hooks?.onStarted,
          warn: (message, error) => hostLog.warn({ err: error }, message),
        },
      );
      const workers = await HostWorkers.create({
        connect: deps.connect,
        namespace: deps.namespace,
        client,
        hostId: config.id,
        types: config.types,
        slots: config.slots,
        runner,
        log: hostLog,
      });
      workers.slots.setOnline(false);
      hosts.push({ config, workers, health, runner });
    }
  } catch (error) {
    await Promise.allSettled(hosts.map((h) => h.workers.shutdown()));
    throw error;
  }

  const snapshot = (): HostPresence[] =>
    hosts.map(({ config, workers, health }) => ({
      id: config.id,
      address: `${config.user}@${config.address}:${config.port}`,
      types: config.types,
      slots: workers.slots.capacity,
      slotsUsed: workers.slots.inUse,
      online: health.state.online,
      since: health.state.since,
      ...(health.state.checkedAt ? { checkedAt: health.state.checkedAt } : {}),
      ...(health.state.error && !health.state.online ? { error: health.state.error } : {}),
    }));
  const presence = new PresencePublisher({
    client,
    snapshot,
    keepaliveMs: deps.presence?.keepaliveMs,
    sampleIntervalMs: deps.presence?.sampleIntervalMs,
    onError: (error) => log.warn({ err: error }, 'could not publish host presence'),
  });

  // Runs left under way by the worker before this one (a deploy, a crash) hold their slots until
  // their attempts attach again: counted before the host takes any new work.
  await Promise.all(
    hosts.map(async ({ config, workers, runner }) => {
      const keys = await runner.runsUnderWay().catch((error: unknown) => {
        log.warn({ host: config.id, err: (error as Error).message }, 'could not list the runs under way; their slots count once they attach');
        return [];
      });
      for (const key of keys) workers.slots.handOff(key, { release: workers.slots.forceAcquire() }, deps.fenceGraceMs ?? 60_000);
      if (keys.length > 0) log.info({ host: config.id, runs: keys.length }, 'runs under way on the host: their slots are kept for their attempts');
    }),
  );
  const done = Promise.all(hosts.map((h) => h.workers.run())).then(() => undefined);
  for (const host of hosts) host.health.start();
  if (hosts.length > 0) presence.start();
  if (hosts.length > 0) log.info({ hosts: hosts.map((h) => h.config.id) }, 'SSH host workers started');
  return {
    hosts,
    presence,
    done,
    async shutdown() {
      for (const host of hosts) {
        host.health.stop();
        host.workers.slots.setOnline(false);
        host.runner.close();
      }
      await Promise.allSettled(hosts.map((h) => h.workers.shutdown()));
      if (hosts.length > 0) await presence.stop();
    },
    async renew() {
      await Promise.all(hosts.map((h) => h.workers.renew()));
    },
  };
}
