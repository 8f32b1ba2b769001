// Workspace preparation: a worktree from the machine's warm mirror (what every attempt after the
// first pays) beside a cold `git clone` of the same repository (what a clone per attempt would
// pay), and the very first prepare (mirror clone + worktree). The repository is generated with
// `git fast-import` and packed: BENCH_WORKSPACE_FILES (default 5000) text files of 0.3–3 KB in
// nested directories, over BENCH_WORKSPACE_COMMITS (default 200) commits on main, the first an
// import, each of the others editing a few lines of 1–5 files (every fifth adds a file too).
// It is measured over two remotes, alternated run by run:
//   http  as Forgejo serves it: git's smart-HTTP CGI behind a loopback node:http server that wants
//         a token (test/support/git-http.ts). Workspaces get `credentials: { token }`; the cold
//         clone gets the same token from a GIT_ASKPASS helper reading a 0600 file (as Workspaces
//         do: the same 401-then-retry round trips, the token in no argv and no environment).
//   file  the bare repository over file:// (git's pack transport, never a local clone's hard links).
// No Temporal: run it alone with `npx tsx bench/workspace.ts`, or with the others through
// `BENCH_ONLY=workspace npx tsx bench/run.ts`.
//   BENCH_WORKSPACE_RUNS (default 20), BENCH_WORKSPACE_FILES (default 5000), BENCH_WORKSPACE_COMMITS (default 200)
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { runLocalScript } from '../src/run/local';
import { workspacePlan, type WorkspacePlan } from '../src/workspace/plan';
import type { GitCredentials } from '../src/workspace/scripts';
import { Workspaces } from '../src/workspace/workspace';
import { GIT_IDENTITY } from '../test/support/git';
import { GitHttpServer } from '../test/support/git-http';
import type { BenchContext } from './context';
import { round, summarize } from './stats';

const RUNS = Number(process.env.BENCH_WORKSPACE_RUNS ?? 20);
const FILES = Number(process.env.BENCH_WORKSPACE_FILES ?? 5000);
const COMMITS = Math.max(1, Number(process.env.BENCH_WORKSPACE_COMMITS ?? 200));
const REPO = 'bench/big';

const run = promisify(execFile);
const gitEnv = { ...process.env, ...GIT_IDENTITY };
async function git(cwd: string, ...args: string[]): Promise<string> {
  const { stdout } = await run('git', args, { cwd, env: gitEnv, maxBuffer: 64 * 1024 * 1024 });
  return stdout.trim();
}

/** A small deterministic PRNG (mulberry32): the same repository at every run. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = 'const value return await import export function string number if else for while result options state error items index count'.split(' ');

/**
 * The bare remote, written by `git fast-import` (seconds, not the minutes 200 add/commit rounds
 * over 5000 files take) and then packed as a server's gc leaves it.
 */
async function generateRemote(root: string): Promise<{ bare: string; files: number; commits: number; packKiB: number; treeKiB: number }> {
  const rand = random(42);
  const pick = (n: number) => Math.floor(rand() * n);
  const path = (i: number) => `pkg-${i % 10}/mod-${Math.floor(i / 10) % 25}/part-${Math.floor(i / 250) % 20}/file-${i}.ts`;
  const line = (i: number, l: number) => `  ${WORDS[(i * 7 + l) % WORDS.length]} ${WORDS[(i + l * 3) % WORDS.length]}_${i}_${l} = ${'lorem ipsum dolor sit amet '.repeat(1 + ((i + l) % 3))}`.trimEnd();
  const files: string[][] = [];
  const newFile = (i: number) => {
    const lines = Array.from({ length: 6 + pick(50) }, (_, l) => line(i, l));
    files[i] = [`// file ${i}`, `export function f${i}() {`, ...lines, '}'];
  };
  const additions = Math.min(Math.floor((COMMITS - 1) / 5), Math.floor(FILES / 2));
  const initial = FILES - additions;
  for (let i = 0; i < initial; i++) newFile(i);

  const chunks: Buffer[] = [];
  const put = (text: string) => chunks.push(Buffer.from(text, 'utf8'));
  const data = (text: string) => put(`data ${Buffer.byteLength(text)}\n${text}\n`);
  const modify = (i: number) => {
    put(`M 100644 inline ${path(i)}\n`);
    data(`${files[i]!.join('\n')}\n`);
  };
  const t0 = 1_700_000_000;
  const commit = (c: number, message: string, changed: number[]) => {
    const when = `${t0 + c * 3600} +0000`;
    put(`commit refs/heads/main\nauthor Bench <bench@example.com> ${when}\ncommitter Bench <bench@example.com> ${when}\n`);
    data(message);
    for (const i of changed) modify(i);
  };
  commit(0, 'initial import', Array.from({ length: initial }, (_, i) => i));
  let count = initial;
  for (let c = 1; c < COMMITS; c++) {
    const changed = new Set<number>();
    for (let k = 1 + pick(5); k > 0; k--) {
      const i = pick(count);
      const lines = files[i]!;
      // A line or three edited, now and then one added: small deltas, as real commits make.
      for (let e = 1 + pick(3); e > 0; e--) lines[2 + pick(lines.length - 3)] = `  // commit ${c}: ${WORDS[pick(WORDS.length)]} ${WORDS[pick(WORDS.length)]} ${pick(1e6)}`;
      if (pick(4) === 0) lines.splice(lines.length - 1, 0, `  ${WORDS[pick(WORDS.length)]}_${c} = ${pick(1e6)};`);
      changed.add(i);
    }
    if (c % 5 === 0 && count < FILES) {
      newFile(count);
      changed.add(count++);
    }
    commit(c, `change ${c}: ${changed.size} file(s)`, [...changed]);
  }
  put('done\n');

  const bare = join(root, 'remotes', `${REPO}.git`);
  mkdirSync(bare, { recursive: true });
  await git(bare, 'init', '-q', '--bare', '--initial-branch=main');
  await new Promise<void>((resolve, reject) => {
    const child = spawn('git', ['fast-import', '--quiet', '--done'], { cwd: bare, stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`git fast-import exited ${code}: ${stderr}`))));
    child.stdin.end(Buffer.concat(chunks));
  });
  await git(bare, 'gc', '-q', '--prune=now');
  const listed = (await git(bare, 'ls-tree', '-r', '--name-only', 'main')).split('\n').length;
  const commits = Number(await git(bare, 'rev-list', '--count', 'main'));
  const packDir = join(bare, 'objects', 'pack');
  const packBytes = readdirSync(packDir).reduce((sum, name) => sum + statSync(join(packDir, name)).size, 0);
  const treeBytes = files.reduce((sum, lines) => sum + Buffer.byteLength(`${lines.join('\n')}\n`), 0);
  return { bare, files: listed, commits, packKiB: Math.round(packBytes / 1024), treeKiB: Math.round(treeBytes / 1024) };
}

async function timed<T>(work: () => Promise<T>): Promise<[number, T]> {
  const t0 = performance.now();
  const value = await work();
  return [performance.now() - t0, value];
}

/**
 * The cold clone's environment for a token: a GIT_ASKPASS helper beside 0600 files holding the
 * user name and token (the token on no command line and in no environment), no terminal prompt,
 * and no credential helper of the machine's config (it would store the token).
 */
function askpassEnv(dir: string, token: string): NodeJS.ProcessEnv {
  mkdirSync(dir, { mode: 0o700 });
  writeFileSync(join(dir, 'username'), 'drover', { mode: 0o600 });
  writeFileSync(join(dir, 'token'), token, { mode: 0o600 });
  const askpass = join(dir, 'askpass');
  writeFileSync(askpass, ['#!/bin/sh', 'case "$1" in', '  Username*) cat "$(dirname "$0")/username" ;;', '  *) cat "$(dirname "$0")/token" ;;', 'esac', ''].join('\n'), { mode: 0o700 });
  const n = Number(process.env.GIT_CONFIG_COUNT) || 0;
  return { ...gitEnv, GIT_ASKPASS: askpass, GIT_TERMINAL_PROMPT: '0', GIT_CONFIG_COUNT: String(n + 1), [`GIT_CONFIG_KEY_${n}`]: 'credential.helper', [`GIT_CONFIG_VALUE_${n}`]: '' };
}

interface Remote {
  kind: 'http' | 'file';
  description: string;
  url: string;
  credentials?: GitCredentials;
  cloneEnv: NodeJS.ProcessEnv;
  ws: Workspaces;
  plan: WorkspacePlan;
  head: string;
  firstMs: number;
  warm: number[];
  finish: number[];
  cold: number[];
  /** HTTP requests (and 401s among them) the warm prepares and the cold clones made, summed. */
  requests: { warm: number; warmRefused: number; cold: number; coldRefused: number };
}

export async function benchWorkspace(ctx: Pick<BenchContext, 'log'> = { log: (line) => console.log(line) }): Promise<Record<string, unknown>> {
  const root = mkdtempSync(join(tmpdir(), 'drover-bench-ws-'));
  let server: GitHttpServer | undefined;
  try {
    ctx.log(`workspace: generating a repository of ${FILES} files over ${COMMITS} commits…`);
    const [generateMs, repository] = await timed(() => generateRemote(root));
    const token = `bench-${randomBytes(16).toString('hex')}`;
    server = await GitHttpServer.start(join(root, 'remotes'), { token, realm: 'drover-bench' });
    const httpServer = server;

    const remotes: Remote[] = [];
    for (const kind of ['http', 'file'] as const) {
      const url = kind === 'http' ? `${httpServer.base}/${REPO}.git` : pathToFileURL(repository.bare).href;
      const credentials = kind === 'http' ? { token } : undefined;
      const workdir = join(root, `machine-${kind}`);
      mkdirSync(workdir);
      const ws = new Workspaces(runLocalScript, { workdir, push: 'never', keepFailedMs: 3_600_000, prepareTimeoutMs: 15 * 60_000, ...(credentials ? { credentials } : {}) });
      const plan = workspacePlan(`implement:bench:big:1`, { kind: 'implement', repo: REPO, number: 1, checkout: { remote: url } });
      if (!plan) throw new Error(`bench: no workspace plan for ${url}`);
      const description = kind === 'http' ? 'smart HTTP on loopback (git http-backend behind node:http), Basic auth with a token' : 'bare, over file://';
      const cloneEnv = kind === 'http' ? askpassEnv(join(root, 'clone-credentials'), token) : gitEnv;
      remotes.push({ kind, description, url, credentials, cloneEnv, ws, plan, head: '', firstMs: 0, warm: [], finish: [], cold: [], requests: { warm: 0, warmRefused: 0, cold: 0, coldRefused: 0 } });
    }

    ctx.log(`workspace: ${repository.files} files, ${repository.commits} commits, a ${repository.packKiB} KiB pack; first prepares (mirror clone + worktree)…`);
    for (const remote of remotes) {
      const [firstMs, prepared] = await timed(() => remote.ws.prepare(remote.plan, 'first'));
      remote.firstMs = firstMs;
      remote.head = prepared.head;
      const checkedOut = await git(prepared.dir, 'ls-files');
      if (checkedOut.split('\n').length !== repository.files) throw new Error(`bench: the ${remote.kind} worktree does not hold every file`);
      await remote.ws.finish(remote.plan, 'first', { outcome: 'success', summary: 'bench' });
    }
    if (httpServer.users.length === 0) throw new Error('bench: the HTTP remote was never asked');

    // Alternated (warm and cold, http and file), so that whatever else the machine does weighs on all alike.
    ctx.log(`workspace: ${RUNS} warm prepares and ${RUNS} cold clones per remote, alternated…`);
    const asked = () => [httpServer.urls.length, httpServer.refused] as const;
    for (let i = 0; i < RUNS; i++) {
      for (const remote of remotes) {
        const key = `warm-${i}`;
        const [urls0, refused0] = asked();
        const [prepareMs, prepared] = await timed(() => remote.ws.prepare(remote.plan, key));
        const [urls1, refused1] = asked();
        if (prepared.head !== remote.head) throw new Error('bench: a warm prepare is not at the remote’s head');
        remote.warm.push(prepareMs);
        const [finishMs] = await timed(() => remote.ws.finish(remote.plan, key, { outcome: 'success', summary: 'bench' }));
        remote.finish.push(finishMs);

        const target = join(root, `clone-${remote.kind}-${i}`);
        const [urls2, refused2] = asked();
        const [cloneMs] = await timed(() => run('git', ['clone', '-q', remote.url, target], { cwd: root, env: remote.cloneEnv, maxBuffer: 64 * 1024 * 1024 }));
        const [urls3, refused3] = asked();
        remote.cold.push(cloneMs);
        if ((await git(target, 'rev-parse', 'HEAD')) !== remote.head) throw new Error('bench: a cold clone is not at the remote’s head');
        rmSync(target, { recursive: true, force: true });
        remote.requests.warm += urls1 - urls0;
        remote.requests.warmRefused += refused1 - refused0;
        remote.requests.cold += urls3 - urls2;
        remote.requests.coldRefused += refused3 - refused2;
      }
    }
    for (const remote of remotes) {
      if (readdirSync(join(remote.ws.settings.workdir, '.drover', 'worktrees')).length !== 0) throw new Error('bench: worktrees were left behind');
    }

    const report: Record<string, unknown> = {
      repository: {
        files: repository.files,
        commits: repository.commits,
        'working tree KiB': repository.treeKiB,
        'pack KiB': repository.packKiB,
        'generated in ms (fast-import + gc)': round(generateMs),
      },
      runs: RUNS,
    };
    for (const remote of remotes) {
      const warmSummary = summarize(remote.warm);
      const coldSummary = summarize(remote.cold);
      report[remote.kind] = {
        remote: remote.description,
        'first prepare ms (mirror clone + worktree), once': round(remote.firstMs),
        'warm prepare ms (fetch into the mirror + worktree add)': warmSummary,
        'finish ms (nothing to push; worktree removed)': summarize(remote.finish),
        'cold git clone ms (fresh directory)': coldSummary,
        'ratio warm prepare / cold clone, p50': round(warmSummary.p50 / coldSummary.p50, 2),
        'ratio warm prepare / cold clone, p99': round(warmSummary.p99 / coldSummary.p99, 2),
        ...(remote.kind === 'http'
          ? {
              'HTTP requests per warm prepare (401s among them)': `${round(remote.requests.warm / RUNS, 1)} (${round(remote.requests.warmRefused / RUNS, 1)})`,
              'HTTP requests per cold clone (401s among them)': `${round(remote.requests.cold / RUNS, 1)} (${round(remote.requests.coldRefused / RUNS, 1)})`,
            }
          : {}),
      };
    }
    return report;
  } finally {
    await server?.close();
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
