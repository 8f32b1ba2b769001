// Runs scripts/cluster.sh (the cluster tier's Temporal on PostgreSQL): for its global setup and
// the fault tests that stop and start parts of it.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const SCRIPT = fileURLToPath(new URL('../../scripts/cluster.sh', import.meta.url));

/** Runs the script; resolves with its stdout and exit status. Its stderr passes through. */
export function runClusterScript(...args: string[]): Promise<{ stdout: string; status: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [SCRIPT, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.on('error', reject);
    child.on('close', (status) => resolve({ stdout, status: status ?? 1 }));
  });
}

/** Runs the script; its stdout, or an error when it fails. */
export async function clusterScript(...args: string[]): Promise<string> {
  const { stdout, status } = await runClusterScript(...args);
  if (status !== 0) throw new Error(`scripts/cluster.sh ${args.join(' ')} failed (exit ${status})`);
  return stdout;
}
