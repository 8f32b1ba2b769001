// `drover agent` as a real process (the CLI through tsx), its output collected for assertions.
import { spawn, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '..', '..');

export interface AgentProcess {
  process: ChildProcess;
  output: string[];
  exited: Promise<number | null>;
}

/** Starts `drover agent <args>` with `env` added to this process's; the caller stops it. */
export function spawnDroverAgent(args: string[], env: NodeJS.ProcessEnv): AgentProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'agent', ...args], {
    cwd: ROOT,
    env: { ...process.env, DROVER_LOG_LEVEL: 'debug', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output: string[] = [];
  child.stdout!.on('data', (c: Buffer) => output.push(c.toString('utf8')));
  child.stderr!.on('data', (c: Buffer) => output.push(c.toString('utf8')));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { process: child, output, exited };
}
