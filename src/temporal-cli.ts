// Finds or provisions the Temporal CLI (which embeds the dev server) without internet:
// TEMPORAL_CLI_PATH, a `temporal` on PATH, a per-user cache, or a build of the pinned version
// through the Go module proxy. Returns undefined only where none of these works, in which case
// @temporalio/testing downloads the CLI itself (machines with internet).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';

/** v1.5.1 is the last tag `go install` accepts (later ones carry a replace directive). */
export const PINNED_TEMPORAL_CLI_VERSION = 'v1.5.1';

export function temporalCliCacheDir(): string {
  const cacheRoot = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(cacheRoot, 'drover', `temporal-cli-${PINNED_TEMPORAL_CLI_VERSION}`);
}

function onPath(command: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const candidate = join(dir, command);
    if (dir && existsSync(candidate)) return candidate;
  }
  return undefined;
}

export function findTemporalCli(): string | undefined {
  const fromEnv = process.env.TEMPORAL_CLI_PATH;
  if (fromEnv) {
    if (!existsSync(fromEnv)) throw new Error(`TEMPORAL_CLI_PATH=${fromEnv} does not exist`);
    return fromEnv;
  }
  const cached = join(temporalCliCacheDir(), 'temporal');
  if (existsSync(cached)) return cached;
  return onPath('temporal');
}

/** Finds the CLI, building the pinned version with Go when needed (about 3 minutes, once per machine). */
export function ensureTemporalCli(log: (line: string) => void = (line) => process.stderr.write(`${line}\n`)): string | undefined {
  const found = findTemporalCli();
  if (found) return found;
  const go = onPath('go') ?? (existsSync('/usr/local/go/bin/go') ? '/usr/local/go/bin/go' : undefined);
  if (!go) {
    log('drover: no Temporal CLI and no Go toolchain; @temporalio/testing will try to download the CLI');
    return undefined;
  }
  const dir = temporalCliCacheDir();
  mkdirSync(dir, { recursive: true });
  log(`drover: building Temporal CLI ${PINNED_TEMPORAL_CLI_VERSION} into ${dir} (first run only, a few minutes)…`);
  const started = Date.now();
  const build = spawnSync(go, ['install', `github.com/temporalio/cli/cmd/temporal@${PINNED_TEMPORAL_CLI_VERSION}`], {
    env: { ...process.env, GOBIN: dir, GOFLAGS: '-mod=mod' },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  if (build.status !== 0) throw new Error(`building the Temporal CLI failed (go install exited ${build.status})`);
  const built = join(dir, 'temporal');
  const version = execFileSync(built, ['--version'], { encoding: 'utf8' }).trim();
  log(`drover: built ${version} in ${Math.round((Date.now() - started) / 1000)} s`);
  return built;
}
