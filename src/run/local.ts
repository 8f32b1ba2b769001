// Runs the wrapper script as a local child process (for `drover agent`), in its own process
// group so that stopping it reaches the agent's whole process tree.
import { spawn } from 'node:child_process';
import type { AgentExit } from '../providers';
import type { AgentProcess } from './agent-process';

export function spawnLocalScript(script: string, options: { env?: NodeJS.ProcessEnv } = {}): AgentProcess {
  const child = spawn('/bin/sh', ['-c', script], {
    detached: true, // a new session and process group, led by the script (its pid is the group id)
    stdio: ['pipe', 'pipe', 'pipe'],
    env: options.env ?? process.env,
  });
  const exit = new Promise<AgentExit>((resolve, reject) => {
    child.once('error', reject);
    // 'close' comes after the exit and after stdout and stderr are drained.
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  return { stdin: child.stdin, stdout: child.stdout, stderr: child.stderr, exit };
}

/** Kills a local process group, ignoring one that is already gone. */
export async function killLocalGroup(pid: number, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  try {
    process.kill(-pid, signal);
  } catch {
    // gone already
  }
}

/** Runs a short script under /bin/sh to its end, with `stdin`, collecting its output (bounded). */
export function runLocalScript(script: string, stdin: Buffer, timeoutMs: number, env: NodeJS.ProcessEnv = process.env): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', script], { stdio: ['pipe', 'pipe', 'pipe'], env, timeout: timeoutMs, killSignal: 'SIGKILL' });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      if (stdout.length < 65_536) stdout += chunk.toString('utf8');
    });
    child.stderr.on('data', (chunk: Buffer) => {
      if (stderr.length < 65_536) stderr += chunk.toString('utf8');
    });
    child.stdin.on('error', () => {});
    child.stdin.end(stdin);
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code: code ?? (signal ? null : 0), stdout, stderr }));
  });
}
