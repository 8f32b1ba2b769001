// Real OpenSSH servers for the SSH tests: `sshd -D` instances on 127.0.0.2, 127.0.0.3, … with
// throwaway host and user keys in a temp dir, running as the current user. Killing one (with its
// sessions) is a host going offline; restarting it brings the host back.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { freePort } from './process';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import type { HostConfig } from '../../src/config';

const SSHD = ['/usr/sbin/sshd', '/usr/local/sbin/sshd'].find((p) => existsSync(p)) ?? 'sshd';

export interface SshdHost {
  id: string;
  address: string;
  port: number;
  /** `ssh-ed25519 AAAA…` — what a config pins. */
  hostKey: string;
  /** The working directory agents run in on this host. */
  workdir: string;
  process?: ChildProcess;
  log: string[];
}

function canConnect(address: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: address, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Every descendant of `pid` (from /proc). */
function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(entry));
      children.set(ppid, list);
    } catch {
      // gone
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const child of children.get(p) ?? []) {
      out.push(child);
      walk(child);
    }
  };
  walk(pid);
  return out;
}

export class SshdFleet {
  readonly hosts: SshdHost[] = [];
  readonly userKeyPath: string;

  private constructor(
    readonly dir: string,
    private readonly prefix: string,
  ) {
    this.userKeyPath = join(dir, 'user_key');
  }

  /** Starts `count` sshd instances (addresses 127.0.0.2 upward) with ids `<prefix>-1`, `<prefix>-2`, … */
  static async start(count: number, prefix = 'h'): Promise<SshdFleet> {
    const dir = mkdtempSync(join(tmpdir(), 'drover-sshd-'));
    const fleet = new SshdFleet(dir, prefix);
    // sshd run by root needs its privilege separation directory.
    if (process.getuid?.() === 0 && !existsSync('/run/sshd')) mkdirSync('/run/sshd', { mode: 0o755, recursive: true });
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'drover-test-user', '-f', fleet.userKeyPath]);
    writeFileSync(join(dir, 'authorized_keys'), readFileSync(`${fleet.userKeyPath}.pub`));
    for (let i = 0; i < count; i++) await fleet.add();
    return fleet;
  }

  async add(): Promise<SshdHost> {
    const n = this.hosts.length + 1;
    const id = `${this.prefix}-${n}`;
    const hostDir = join(this.dir, id);
    const workdir = join(hostDir, 'work');
    mkdirSync(workdir, { recursive: true });
    const address = `127.0.0.${n + 1}`;
    const host: SshdHost = { id, address, port: await freePort(address), hostKey: '', workdir, log: [] };
    this.newHostKey(host);
    this.hosts.push(host);
    await this.startHost(host);
    return host;
  }

  host(id: string): SshdHost {
    const host = this.hosts.find((h) => h.id === id);
    if (!host) throw new Error(`no test host ${id}`);
    return host;
  }

  private newHostKey(host: SshdHost): void {
    const keyPath = join(this.dir, host.id, 'host_key');
    rmSync(keyPath, { force: true });
    rmSync(`${keyPath}.pub`, { force: true });
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', host.id, '-f', keyPath]);
    host.hostKey = readFileSync(`${keyPath}.pub`, 'utf8').trim();
  }

  async startHost(host: SshdHost): Promise<void> {
    const hostDir = join(this.dir, host.id);
    const configPath = join(hostDir, 'sshd_config');
    writeFileSync(
      configPath,
      [
        `ListenAddress ${host.address}:${host.port}`,
        `HostKey ${join(hostDir, 'host_key')}`,
        `AuthorizedKeysFile ${join(this.dir, 'authorized_keys')}`,
        `PidFile ${join(hostDir, 'sshd.pid')}`,
        'StrictModes no',
        'UsePAM no',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'PubkeyAuthentication yes',
        'PermitRootLogin prohibit-password',
        `AllowUsers ${userInfo().username}`,
        'MaxStartups 200',
        'MaxSessions 100',
        'LogLevel ERROR',
        // bash sources ~/.bashrc for ssh commands only at shell level 1; some CI machines' root
        // .bashrc is slow (pyenv init), so sessions start at level 1 and bash skips it.
        'SetEnv SHLVL=1',
        '',
      ].join('\n'),
    );
    const child = spawn(SSHD, ['-D', '-e', '-f', configPath], { stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr!.on('data', (chunk: Buffer) => host.log.push(chunk.toString('utf8')));
    host.process = child;
    const deadline = Date.now() + 10_000;
    while (!(await canConnect(host.address, host.port))) {
      if (child.exitCode !== null) throw new Error(`sshd for ${host.id} exited: ${host.log.join('')}`);
      if (Date.now() > deadline) throw new Error(`sshd for ${host.id} did not start listening: ${host.log.join('')}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  /** The host dies: its sshd and every session (and agent) under it are killed at once. */
  async kill(id: string): Promise<void> {
    const host = this.host(id);
    const child = host.process;
    if (!child?.pid || child.exitCode !== null) return;
    const all = [child.pid, ...descendants(child.pid)];
    for (const pid of all) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    if (child.exitCode === null && child.signalCode === null) await new Promise((r) => child.once('exit', r));
    host.process = undefined;
  }

  async restart(id: string): Promise<void> {
    await this.kill(id);
    await this.startHost(this.host(id));
  }

  /** The host is rebuilt with a new host key (a config pinning the old one must refuse it). */
  async rotateHostKey(id: string): Promise<void> {
    await this.kill(id);
    this.newHostKey(this.host(id));
    await this.startHost(this.host(id));
  }

  /** A host config for Drover, pinning the host's current key. */
  hostConfig(id: string, overrides: Partial<HostConfig> & Pick<HostConfig, 'types' | 'agents'>): HostConfig {
    const host = this.host(id);
    return {
      id,
      address: host.address,
      port: host.port,
      user: userInfo().username,
      privateKeyPath: this.userKeyPath,
      hostKey: host.hostKey,
      slots: 1,
      workdir: host.workdir,
      healthCheckInterval: 300,
      connectTimeout: '5s',
      killGrace: '1s',
      sessionResume: 'same-instance',
      ...overrides,
    } as HostConfig;
  }

  async stop(): Promise<void> {
    for (const host of this.hosts) await this.kill(host.id);
    rmSync(this.dir, { recursive: true, force: true });
  }
}
