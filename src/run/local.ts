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
