// Workspace preparation: a worktree from the machine's warm mirror (what every attempt after the
// first pays) beside a cold `git clone` of the same repository (what a clone per attempt would
// pay), and the very first prepare (mirror clone + worktree). The repository is generated: about
// BENCH_WORKSPACE_FILES (default 5000) small text files in nested directories over a few commits,
// held by a bare remote reached over file:// (git's pack transport, as a real remote, never the
// hard links of a local-path clone). No Temporal: run it alone with `npx tsx bench/workspace.ts`,
// or with the others through `BENCH_ONLY=workspace npx tsx bench/run.ts`.
//   BENCH_WORKSPACE_RUNS (default 20), BENCH_WORKSPACE_FILES (default 5000)
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { runLocalScript } from '../src/run/local';
import { workspacePlan } from '../src/workspace/plan';
import { Workspaces } from '../src/workspace/workspace';
import { GIT_IDENTITY } from '../test/support/git';
import type { BenchContext } from './context';
import { round, summarize } from './stats';

const RUNS = Number(process.env.BENCH_WORKSPACE_RUNS ?? 20);
const FILES = Number(process.env.BENCH_WORKSPACE_FILES ?? 5000);
const REPO = 'bench/big';

const run = promisify(execFile);
const gitEnv = { ...process.env, ...GIT_IDENTITY };
async function git(cwd: string, ...args: string[]): Promise<string> {
  const { stdout } = await run('git', args, { cwd, env: gitEnv, maxBuffer: 64 * 1024 * 1024 });
  return stdout.trim();
}

/** Writes `count` files from `first` on: 4 levels of directories, a few hundred bytes each. */
function writeFiles(work: string, first: number, count: number, version = 1): void {
  for (let i = first; i < first + count; i++) {
    const dir = join(work, `pkg-${i % 10}`, `mod-${Math.floor(i / 10) % 25}`, `part-${Math.floor(i / 250) % 20}`);
    mkdirSync(dir, { recursive: true });
    const lines = Array.from({ length: 8 }, (_, l) => `// file ${i}, line ${l}, version ${version}: ${'lorem ipsum dolor sit amet '.repeat(1 + ((i + l) % 3))}`);
    writeFileSync(join(dir, `file-${i}.ts`), `${lines.join('\n')}\n`);
  }
}

/** The bare remote: FILES files over four commits on main (most at first, then additions and edits). */
async function generateRemote(root: string): Promise<{ bare: string; files: number; commits: number }> {
  const work = join(root, 'work');
  mkdirSync(work);
  await git(work, 'init', '-q', '--initial-branch=main');
  const first = Math.floor(FILES * 0.8);
  const steps: Array<{ message: string; write: () => void }> = [
    { message: 'initial import', write: () => writeFiles(work, 0, first) },
    { message: 'more modules', write: () => writeFiles(work, first, Math.floor(FILES * 0.1)) },
    { message: 'the rest', write: () => writeFiles(work, first + Math.floor(FILES * 0.1), FILES - first - Math.floor(FILES * 0.1)) },
    { message: 'edits', write: () => writeFiles(work, 0, Math.floor(FILES * 0.05), 2) },
  ];
  for (const step of steps) {
    step.write();
    await git(work, 'add', '-A');
    await git(work, 'commit', '-q', '-m', step.message);
  }
  const files = Number((await git(work, 'ls-files')).split('\n').length);
  const bare = join(root, 'remotes', `${REPO}.git`);
  mkdirSync(join(bare, '..'), { recursive: true });
  await git(root, 'clone', '-q', '--bare', '--no-local', work, bare);
  rmSync(work, { recursive: true, force: true });
  return { bare, files, commits: steps.length };
}

async function timed<T>(work: () => Promise<T>): Promise<[number, T]> {
  const t0 = performance.now();
  const value = await work();
  return [performance.now() - t0, value];
}

export async function benchWorkspace(ctx: Pick<BenchContext, 'log'> = { log: (line) => console.log(line) }): Promise<Record<string, unknown>> {
  const root = mkdtempSync(join(tmpdir(), 'drover-bench-ws-'));
  try {
    ctx.log(`workspace: generating a repository of about ${FILES} files…`);
    const [generateMs, remote] = await timed(() => generateRemote(root));
    const url = pathToFileURL(remote.bare).href;
    const workdir = join(root, 'machine');
    mkdirSync(workdir);
    const ws = new Workspaces(runLocalScript, { workdir, push: 'never', keepFailedMs: 3_600_000, prepareTimeoutMs: 15 * 60_000 });
    const plan = workspacePlan(`implement:bench:big:1`, { kind: 'implement', repo: REPO, number: 1, checkout: { remote: url } });
    if (!plan) throw new Error(`bench: no workspace plan for ${url}`);

    ctx.log(`workspace: ${remote.files} files, ${remote.commits} commits; first prepare (mirror clone + worktree)…`);
    const [firstMs, firstPrepared] = await timed(() => ws.prepare(plan, 'first'));
    const checkedOut = await git(firstPrepared.dir, 'ls-files');
    if (checkedOut.split('\n').length !== remote.files) throw new Error('bench: the worktree does not hold every file');
    await ws.finish(plan, 'first', { outcome: 'success', summary: 'bench' });

    // Alternated, so that whatever else the machine does weighs on both alike.
    const warm: number[] = [];
    const finish: number[] = [];
    const cold: number[] = [];
    ctx.log(`workspace: ${RUNS} warm prepares and ${RUNS} cold clones, alternated…`);
    for (let i = 0; i < RUNS; i++) {
      const key = `warm-${i}`;
      const [prepareMs, prepared] = await timed(() => ws.prepare(plan, key));
      if (prepared.head !== firstPrepared.head) throw new Error('bench: a warm prepare is not at the remote’s head');
      warm.push(prepareMs);
      const [finishMs] = await timed(() => ws.finish(plan, key, { outcome: 'success', summary: 'bench' }));
      finish.push(finishMs);

      const target = join(root, `clone-${i}`);
      const [cloneMs] = await timed(() => git(root, 'clone', '-q', url, target));
      cold.push(cloneMs);
      rmSync(target, { recursive: true, force: true });
    }
    if (readdirSync(join(workdir, '.drover', 'worktrees')).length !== 0) throw new Error('bench: worktrees were left behind');

    const warmSummary = summarize(warm);
    const coldSummary = summarize(cold);
    return {
      repository: { files: remote.files, commits: remote.commits, 'generated in ms': round(generateMs), remote: 'bare, over file://' },
      runs: RUNS,
      'first prepare ms (mirror clone + worktree), once': round(firstMs),
      'warm prepare ms (fetch into the mirror + worktree add)': warmSummary,
      'finish ms (nothing to push; worktree removed)': summarize(finish),
      'cold git clone ms (fresh directory)': coldSummary,
      'ratio warm prepare / cold clone, p50': round(warmSummary.p50 / coldSummary.p50, 2),
      'ratio warm prepare / cold clone, p99': round(warmSummary.p99 / coldSummary.p99, 2),
    };
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

// Alone: `npx tsx bench/workspace.ts` (no Temporal needed).
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  benchWorkspace()
    .then((report) => console.log(JSON.stringify({ workspace: report }, null, 2)))
    .catch((error: unknown) => {
      console.error(error);
      process.exit(1);
    });
}
