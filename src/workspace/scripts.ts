// The shell scripts that make and finish an attempt's workspace, on an SSH host or a pull agent's
// machine alike (POSIX sh, git, util-linux `flock`). Layout under `<workdir>/.drover`:
//   mirrors/<owner>/<name>.git     a bare mirror per repository, fetched before each attempt
//   mirrors/<owner>/<name>.lock    taken while fetching and while adding or removing worktrees
//   worktrees/<run key>/           the attempt's worktree; `.info` beside it once it is ready,
//                                  `.kept` once a failed attempt's worktree is kept
//   credentials/                   0700: what Drover's own git commands authenticate with
// Every value from a task (branch, sha, URL) is validated by ./plan.ts and travels shell-quoted;
// secrets travel on stdin, never on a command line.
import { shellQuote } from '../run/shell';
import { workspacePaths, type PushMode, type WorkspacePlan } from './plan';

/** What Drover's own git commands authenticate with (the agent gets them only if configured). */
export interface GitCredentials {
  /** HTTP(S) remotes: a Forgejo access token, given to git by an askpass helper. */
  token?: string;
  /** The user name sent with the token (Forgejo takes the token's owner whatever it says). */
  username?: string;
  /** SSH remotes: a deploy key (OpenSSH private key text) and the server's known_hosts lines. */
  sshKey?: string;
  knownHosts?: string;
}

/** The credentials, as the stdin of a workspace script, and the part of the script that stores them. */
export function credentialsInput(credentials: GitCredentials | undefined): { stdin: Buffer; script: string[] } {
  const fields: Array<[file: string, value: string]> = [];
  if (credentials?.token) fields.push(['token', credentials.token], ['username', credentials.username || 'drover']);
  if (credentials?.sshKey) fields.push(['ssh_key', credentials.sshKey.endsWith('\n') ? credentials.sshKey : `${credentials.sshKey}\n`], ['known_hosts', credentials.knownHosts ?? '']);
  const parts = fields.map(([, value]) => Buffer.from(value, 'utf8'));
  const script = [
    'C="$R/credentials"',
    '( umask 077 && mkdir -p "$C" ) || fail "cannot make the credentials directory"',
    ...fields.map(([file], i) => `( umask 077 && head -c ${parts[i]!.length} > "$C/${file}.tmp" && mv -f "$C/${file}.tmp" "$C/${file}" ) || fail "cannot store the credentials"`),
    'export GIT_TERMINAL_PROMPT=0',
  ];
  if (credentials?.token) {
    const askpass = ['#!/bin/sh', 'case "$1" in', '  Username*) cat "$(dirname "$0")/username" ;;', '  *) cat "$(dirname "$0")/token" ;;', 'esac', ''].join('\n');
    script.push(
      `printf '%s' ${shellQuote(askpass)} > "$C/askpass.tmp" && chmod 700 "$C/askpass.tmp" && mv -f "$C/askpass.tmp" "$C/askpass"`,
      'export GIT_ASKPASS="$C/askpass"',
      // No credential helper of the machine's git config: it would be handed the token and keep
      // it (~/.git-credentials in clear, a keychain) for any git to use, the agent's included.
      // An empty credential.helper, added to the environment's config (git 2.31+), empties the list.
      'n=${GIT_CONFIG_COUNT:-0}; case $n in ""|*[!0-9]*) n=0 ;; esac',
      'export "GIT_CONFIG_KEY_$n=credential.helper" "GIT_CONFIG_VALUE_$n=" GIT_CONFIG_COUNT=$((n + 1))',
    );
  }
  if (credentials?.sshKey) {
    const ssh = ['#!/bin/sh', 'c=$(dirname "$0")', 'exec ssh -i "$c/ssh_key" -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$c/known_hosts" "$@"', ''].join('\n');
    script.push(`printf '%s' ${shellQuote(ssh)} > "$C/ssh.tmp" && chmod 700 "$C/ssh.tmp" && mv -f "$C/ssh.tmp" "$C/ssh"`, 'export GIT_SSH="$C/ssh"');
  }
  return { stdin: Buffer.concat(parts), script };
}

/** The opening every workspace script shares: the root, the paths, failure reporting, the lock. */
function preamble(workdir: string, plan: WorkspacePlan, runKey: string): string[] {
  const paths = workspacePaths(plan.repo, runKey);
  return [
    'fail() { printf "error=%s\\n" "$1"; exit 1; }',
    `cd -- ${shellQuote(workdir)} || fail "cannot enter the working directory"`,
    'mkdir -p .drover/worktrees || fail "cannot make .drover in the working directory"',
    'R=$(cd .drover && pwd -P) || fail "cannot enter .drover"',
    `m="$R/${paths.mirror}"`,
    `w="$R/${paths.worktree}"`,
    'mkdir -p "$(dirname "$m")" || fail "cannot make the mirrors directory"',
    // One repository's fetches and worktree changes take turns; other work never waits on them.
    'lock() { exec 9> "${m%.git}.lock" && flock -w 900 9 || fail "the mirror stayed locked for 15 minutes"; }',
    'unlock() { exec 9>&-; }',
    `url=${shellQuote(plan.remote)}`,
  ];
}

/** Lines of a script's stdout as `key=value`. */
export function parseKeyValues(stdout: string): Record<string, string> {
  const values: Record<string, string> = {};
  for (const line of stdout.split('\n')) {
    const at = line.indexOf('=');
    if (at > 0 && /^[a-z_]+$/.test(line.slice(0, at))) values[line.slice(0, at)] = line.slice(at + 1);
  }
  return values;
}

export interface PrepareOptions {
  workdir: string;
  plan: WorkspacePlan;
  runKey: string;
  credentials?: GitCredentials;
  /** Failed attempts' worktrees older than this are removed (swept at each prepare). */
  keepFailedMinutes: number;
}

/**
 * Makes the attempt's worktree, or finds it made (a retried activity): prints `workspace=`,
 * `head=` (the commit it starts at), `branch=` (empty when detached), `base=`, `remote_branch=`
 * (1 when the task branch was on the remote already). Exit 0, or 1 with `error=`.
 */
export function buildPrepareScript(options: PrepareOptions): { script: string; stdin: Buffer } {
  const { plan } = options;
  const credentials = credentialsInput(options.credentials);
  const q = (value: string | undefined) => shellQuote(value ?? '');
  const keepMinutes = Math.max(1, Math.ceil(options.keepFailedMinutes));
  const script = [
    ...preamble(options.workdir, plan, options.runKey),
    ...credentials.script,
    // Ready already (this attempt's activity is being retried): the agent may be working in it.
    '[ -s "$w.info" ] && { cat "$w.info"; exit 0; }',
    // A failing git's last words, for the error; its file goes (nothing else would remove it).
    'errors() { tail -c 500 "$1" | tr "\\n" " "; rm -f "$1"; }',
    'lock',
    // Failed attempts' worktrees are kept a while for people to look at, then swept.
    `for k in "$R"/worktrees/*.kept; do [ -e "$k" ] || continue; [ -n "$(find "$k" -mmin +${keepMinutes} 2>/dev/null)" ] || continue; rm -rf -- "\${k%.kept}" "\${k%.kept}.info" "$k"; done`,
    '[ -d "$m" ] || git init -q --bare "$m" || fail "cannot make the mirror"',
    'git -C "$m" config remote.origin.url "$url" && git -C "$m" config --replace-all remote.origin.fetch "+refs/heads/*:refs/remotes/origin/*" || fail "cannot configure the mirror"',
    'git -C "$m" fetch -q --prune origin 2> "$w.fetch-err" || fail "fetching $url failed: $(errors "$w.fetch-err")"',
    'rm -f "$w.fetch-err"',
    `pull=${plan.pull ?? ''}`,
    // A pull request's head may live in a fork: Forgejo serves it as refs/pull/<n>/head.
    '[ -n "$pull" ] && git -C "$m" fetch -q origin "+refs/pull/$pull/head:refs/drover/pull/$pull" 2>/dev/null',
    `sha=${q(plan.sha)}`,
    '[ -n "$sha" ] && ! git -C "$m" cat-file -e "$sha^{commit}" 2>/dev/null && git -C "$m" fetch -q origin "$sha" 2>/dev/null',
    `branch=${q(plan.branch)}`,
    `base=${q(plan.base)}`,
    `ref=${q(plan.ref)}`,
    'has() { git -C "$m" rev-parse -q --verify "$1^{commit}" > /dev/null 2>&1; }',
    'if [ -z "$base" ]; then base=$(git -C "$m" ls-remote --symref origin HEAD 2>/dev/null | sed -n "s|^ref: refs/heads/\\([^[:space:]]*\\)[[:space:]]*HEAD\\$|\\1|p"); fi',
    'remote_branch=0',
    'if [ -n "$sha" ]; then',
    '  has "$sha" || fail "commit $sha is not in the repository"',
    '  start=$sha',
    'elif [ -n "$branch" ] && has "refs/remotes/origin/$branch"; then',
    '  start="refs/remotes/origin/$branch"',
    'elif [ -n "$pull" ] && has "refs/drover/pull/$pull"; then',
    '  start="refs/drover/pull/$pull"',
    'elif [ -n "$ref" ]; then',
    '  if has "refs/remotes/origin/$ref"; then start="refs/remotes/origin/$ref"; elif has "refs/tags/$ref"; then start="refs/tags/$ref"; elif has "$ref"; then start=$ref; else fail "ref $ref is not in the repository"; fi',
    'elif [ -n "$base" ] && has "refs/remotes/origin/$base"; then',
    '  start="refs/remotes/origin/$base"',
    'else',
    '  fail "nothing to check out: the remote has no branch ${branch:-${base:-(default)}}"',
    'fi',
    '[ -n "$branch" ] && has "refs/remotes/origin/$branch" && remote_branch=1',
    'git -C "$m" worktree prune',
    // A worktree left half made by an interrupted prepare is made again.
    'rm -rf -- "$w"',
    'detached=1',
    'if [ -n "$branch" ]; then',
    '  if git -C "$m" worktree add -q -B "$branch" "$w" "$start" 2> "$w.add-err"; then',
    '    detached=0',
    '    git -C "$m" config "branch.$branch.remote" origin && git -C "$m" config "branch.$branch.merge" "refs/heads/$branch"',
    '  else',
    // The branch is checked out in another live worktree (two tasks on one pull request): work detached.
    '    rm -rf -- "$w"',
    '    git -C "$m" worktree add -q --detach "$w" "$start" 2>> "$w.add-err" || fail "cannot add the worktree: $(errors "$w.add-err")"',
    '  fi',
    'else',
    '  git -C "$m" worktree add -q --detach "$w" "$start" 2> "$w.add-err" || fail "cannot add the worktree: $(errors "$w.add-err")"',
    'fi',
    'rm -f "$w.add-err"',
    'unlock',
    'head=$(git -C "$w" rev-parse HEAD) || fail "the worktree has no HEAD"',
    '{ echo "workspace=$w"; echo "head=$head"; echo "branch=$branch"; echo "detached=$detached"; echo "base=$base"; echo "remote_branch=$remote_branch"; echo "credentials=${C:-}"; } > "$w.info.tmp" && mv -f "$w.info.tmp" "$w.info" || fail "cannot record the worktree"',
    'cat "$w.info"',
  ].join('\n');
  return { script, stdin: credentials.stdin };
}

export interface FinishOptions {
  workdir: string;
  plan: WorkspacePlan;
  runKey: string;
  credentials?: GitCredentials;
  push: PushMode;
  /** Keep the worktree (a failed attempt) instead of removing it. */
  keep: boolean;
  /** What the agent declared, to check against the remote. */
  claimedBranch?: string;
  claimedRev?: string;
}

/**
 * After the agent: pushes the branch's new commits (push: auto), reads what the remote has, and
 * removes the worktree or keeps it. Prints `push=` (pushed, rejected, nothing, off), `push_error=`,
 * `head_after=`, `dirty=` (files changed but not committed), `remote_rev=` (the branch's tip on
 * the remote, empty when it has none), `claimed_remote_rev=` and `claimed_rev_on_remote=` (0/1).
 * Safe to run again: a worktree already removed is not pushed from twice.
 */
export function buildFinishScript(options: FinishOptions): { script: string; stdin: Buffer } {
  const { plan } = options;
  const credentials = credentialsInput(options.credentials);
  const q = (value: string | undefined) => shellQuote(value ?? '');
  const script = [
    ...preamble(options.workdir, plan, options.runKey),
    ...credentials.script,
    `branch=${q(plan.branch)}`,
    `claimed_branch=${q(options.claimedBranch)}`,
    `claimed_rev=${q(options.claimedRev)}`,
    `push_mode=${options.push}`,
    `keep=${options.keep ? 1 : 0}`,
    'start=$(sed -n "s/^head=//p" "$w.info" 2>/dev/null)',
    'detached=$(sed -n "s/^detached=//p" "$w.info" 2>/dev/null)',
    'if [ -d "$w" ] && [ -s "$w.info" ]; then',
    '  echo "dirty=$(git -C "$w" status --porcelain 2>/dev/null | wc -l | tr -d " ")"',
    '  now=$(git -C "$w" rev-parse HEAD 2>/dev/null)',
    '  echo "head_after=$now"',
    '  if [ -z "$branch" ] || [ "$push_mode" != auto ]; then echo push=off',
    '  elif [ "$now" = "$start" ]; then echo push=nothing',
    '  elif git -C "$w" push -q origin "HEAD:refs/heads/$branch" 2> "$w.push-err"; then echo push=pushed',
    '  else echo push=rejected; echo "push_error=$(tail -c 500 "$w.push-err" | tr "\\n" " ")"; keep=1; fi',
    '  rm -f "$w.push-err"',
    'fi',
    'tip() { git -C "$m" ls-remote origin "refs/heads/$1" 2>/dev/null | cut -f1 | head -n 1; }',
    '[ -n "$branch" ] && echo "remote_rev=$(tip "$branch")"',
    'if [ -n "$claimed_branch" ]; then',
    '  echo "claimed_remote_rev=$(tip "$claimed_branch")"',
    '  if [ -n "$claimed_rev" ]; then',
    '    git -C "$m" fetch -q origin "+refs/heads/$claimed_branch:refs/remotes/origin/$claimed_branch" 2>/dev/null',
    '    if git -C "$m" merge-base --is-ancestor "$claimed_rev" "refs/remotes/origin/$claimed_branch" 2>/dev/null; then echo claimed_rev_on_remote=1; else echo claimed_rev_on_remote=0; fi',
    '  fi',
    'fi',
    'lock',
    // A failed attempt's worktree (or one whose push was refused) is kept for people to look at,
    // with its branch let go, so that the next attempt can check the branch out.
    'if [ "$keep" = 1 ]; then',
    '  if [ -d "$w" ]; then git -C "$w" checkout -q --detach 2>/dev/null; touch "$w.kept"; echo kept=1; fi',
    'else',
    '  if [ -e "$w" ]; then git -C "$m" worktree remove --force "$w" 2>/dev/null || rm -rf -- "$w"; fi',
    '  git -C "$m" worktree prune',
    '  [ -n "$branch" ] && [ "$detached" = 0 ] && git -C "$m" branch -q -D "$branch" > /dev/null 2>&1',
    '  rm -f "$w.info" "$w.kept"; echo kept=0',
    'fi',
    'unlock',
    'exit 0',
  ].join('\n');
  return { script, stdin: credentials.stdin };
}
