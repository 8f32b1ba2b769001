// A run on an SSH host that outlives the SSH channel and the worker that started it. The agent
// runs in a session of its own, with its prompt, output, pid and exit status in the attempt's
// directory on the host; a worker that restarts attaches to it again. A watchdog beside it stops
// the run when no worker has held it for the fence grace (a partition, a worker gone for good),
// so that a task dispatched again never overlaps the run it replaces.
//
// The attempt's directory (<workdir>/.drover/runs/<key>/):
//   prompt     the prompt, the agent's stdin
//   out, err   the agent's stdout and stderr, as they come
//   pid        the agent's pid, which is also its process group and session
//   exit       its exit status once it has ended (128+N when killed by signal N)
//   lease      touched by the worker that holds the run; its age is what the watchdog checks
//   fenced     written by the watchdog when it stopped an unheld run
//   boot_id    the host's boot id at start: after a reboot the run is gone, whatever the files say
//
// Scripts are POSIX sh with util-linux `setsid` and GNU `stat`, `head -c` and `tail -c`.
import { envAssignment, PID_MARKER, shellQuote } from './shell';

/** Where an attempt's run lives, relative to the host's workdir. Keys are made of safe characters only. */
export function runDirectory(workdir: string, runKey: string): string {
  if (!/^[A-Za-z0-9_.-]{1,200}$/.test(runKey)) throw new Error(`invalid run key ${JSON.stringify(runKey)}`);
  return `${workdir.replace(/\/+$/, '')}/.drover/runs/${runKey}`;
}

/** A run key for one attempt of one run of a task: stable across retries of the attempt's activity. */
export function runKey(taskId: string, runId: string, attempt: number): string {
  return `${taskId.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 120)}.${runId.replace(/[^A-Za-z0-9-]/g, '').slice(0, 36)}.${attempt}`;
}

/** Exit code of the start script when the run's directory existed already: attach to it. */
export const ALREADY_STARTED = 3;
/** Exit code of the attach script when the run is gone (never started, or the host rebooted). */
export const RUN_GONE = 124;

export interface StartOptions {
  dir: string;
  workdir: string;
  env: Record<string, string>;
  argv: string[];
  promptBytes: number;
  /** The watchdog stops the run once its lease is older than this. */
  unheldSeconds: number;
  killGraceSeconds: number;
}

/**
 * Starts the run, detached, and exits at once: 0 started, ALREADY_STARTED when the directory was
 * there (a retried start: attach instead), 125 when it could not start (the prompt did not
 * arrive whole, no working directory). The prompt is read from stdin: exactly `promptBytes` bytes.
 */
export function buildStartScript(options: StartOptions): string {
  if (!Number.isInteger(options.promptBytes) || options.promptBytes < 0) throw new Error('promptBytes must be a byte count');
  if (options.argv.length === 0) throw new Error('the agent command is empty');
  const unheld = Math.max(1, Math.floor(options.unheldSeconds));
  const grace = Math.max(0, Math.ceil(options.killGraceSeconds));
  const env = Object.entries(options.env).map(([name, value]) => envAssignment(name, value));
  const command = ['env', '--', ...env, ...options.argv.map(shellQuote)].join(' ');
  // The agent: a session (and so a process group) of its own, so that the whole tree it starts is
  // stopped together, and so that it does not share a group with the runner that records its end.
  const agent = `echo $$ > "$0/pid.tmp" && mv -f "$0/pid.tmp" "$0/pid" && exec ${command}`;
  const watchdog = [
    'while [ ! -e "$d/exit" ]; do',
    '  age=$(( $(date +%s) - $(stat -c %Y "$d/lease" 2>/dev/null || echo 0) ))',
    `  if [ "$age" -gt ${unheld} ]; then`,
    '    echo "no worker held the run for $age s" > "$d/fenced"',
    `    kill -TERM -"$a" 2>/dev/null; sleep ${grace}; kill -KILL -"$a" 2>/dev/null; break`,
    '  fi',
    '  sleep 2',
    'done',
  ].join('\n');
  const runner = [
    'd=$1',
    `cd -- ${shellQuote(options.workdir)} || { echo "drover: cannot enter the working directory" >> "$d/err"; echo 125 > "$d/exit"; exit 0; }`,
    `setsid sh -c ${shellQuote(agent)} "$d" < "$d/prompt" > "$d/out" 2> "$d/err" &`,
    'a=$!',
    `( ${watchdog} ) > /dev/null 2>&1 &`,
    'wait "$a"; rc=$?',
    'echo "$rc" > "$d/exit.tmp" && mv -f "$d/exit.tmp" "$d/exit"',
  ].join('\n');
  return [
    `d=${shellQuote(options.dir)}`,
    'mkdir -p -- "$(dirname -- "$d")" || exit 125',
    `mkdir -- "$d" 2>/dev/null || exit ${ALREADY_STARTED}`,
    // A stdin that closes early (the caller died mid-write) leaves a short prompt: never run on it.
    `head -c ${options.promptBytes} > "$d/prompt" && [ $(wc -c < "$d/prompt") -eq ${options.promptBytes} ] || { echo "drover: the prompt did not arrive whole" >&2; echo 125 > "$d/exit"; exit 125; }`,
    'cat /proc/sys/kernel/random/boot_id > "$d/boot_id" 2>/dev/null',
    ': > "$d/out"; : > "$d/err"; touch "$d/lease"',
    `setsid sh -c ${shellQuote(runner)} drover-run "$d" < /dev/null > /dev/null 2>&1 &`,
    'exit 0',
  ].join('\n');
}

export interface AttachOptions {
  dir: string;
  /** Bytes of stdout and stderr already read (a worker attaching again): the rest follows. */
  outOffset: number;
  errOffset: number;
}

/** Exit code of the attach script when the watchdog stopped the run (see the run's `fenced`). */
export const FENCED = 121;

/** Exit code of the attach script when its caller closed stdin (detached): the run goes on. */
export const DETACHED = 122;

/**
 * Follows a started run: prints PID_MARKER<pid>, then the agent's stdout and stderr from the
 * given offsets as they grow, and exits with the agent's exit status once it has ended
 * (RUN_GONE when the run is not there). It ends with DETACHED when its stdin does (the caller
 * detached), leaving the run alone. Following holds nothing: the lease is renewed apart (see
 * buildRenewScript), so a follower that lingers on after a partition keeps no run alive.
 */
export function buildAttachScript(options: AttachOptions): string {
  for (const n of [options.outOffset, options.errOffset]) if (!Number.isInteger(n) || n < 0) throw new Error('offsets must be byte counts');
  return [
    `d=${shellQuote(options.dir)}`,
    `[ -d "$d" ] || { echo "drover: no run at $d" >&2; exit ${RUN_GONE}; }`,
    `if [ -e "$d/boot_id" ] && [ "$(cat "$d/boot_id")" != "$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)" ]; then echo "drover: the host restarted since the run began" >&2; exit ${RUN_GONE}; fi`,
    'exec 3<&0',
    '( cat <&3 > /dev/null ) &',
    'r=$!',
    // The pid appears as soon as the agent starts; a run that ended without one never started.
    'i=0; while [ ! -s "$d/pid" ] && [ ! -e "$d/exit" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done',
    `[ -s "$d/pid" ] || { cat "$d/err" >&2; echo "drover: the agent did not start" >&2; kill $r 2>/dev/null; exit ${RUN_GONE}; }`,
    `printf '${PID_MARKER.replace('\u001e', '\\036')}%s\\n' "$(cat "$d/pid")"`,
    `o=${options.outOffset}; e=${options.errOffset}`,
    'while :; do',
    '  [ -e "$d/exit" ] && f=1 || f=0',
    '  n=$(wc -c < "$d/out"); if [ "$n" -gt "$o" ]; then tail -c +$((o+1)) "$d/out" | head -c $((n-o)); o=$n; fi',
    '  n=$(wc -c < "$d/err"); if [ "$n" -gt "$e" ]; then tail -c +$((e+1)) "$d/err" | head -c $((n-e)) >&2; e=$n; fi',
    `  if [ $f = 1 ]; then kill $r 2>/dev/null; [ -e "$d/fenced" ] && { echo "drover: $(cat "$d/fenced")" >&2; exit ${FENCED}; }; exit "$(cat "$d/exit")"; fi`,
    // The caller detached (its stdin ended): the run goes on without this follower.
    `  kill -0 $r 2>/dev/null || exit ${DETACHED}`,
    '  sleep 0.5',
    'done',
  ].join('\n');
}

/** Renews the run's lease: prints `held` when the run is still there to hold, `ended` or `fenced` otherwise. */
export function buildRenewScript(dir: string): string {
  return [
    `d=${shellQuote(dir)}`,
    '[ -e "$d/fenced" ] && { echo fenced; exit 0; }',
    '[ -e "$d/exit" ] && { echo ended; exit 0; }',
    'touch "$d/lease" && echo held',
  ].join('\n');
}

/** Stops a run: SIGTERM to the agent's process group, SIGKILL after the grace. */
export function buildKillScript(dir: string, killGraceSeconds: number): string {
  const grace = Math.max(0, Math.ceil(killGraceSeconds));
  return [
    `d=${shellQuote(dir)}`,
    'p=$(cat "$d/pid" 2>/dev/null) || exit 0',
    '[ -e "$d/exit" ] && exit 0',
    'kill -TERM -"$p" 2>/dev/null || exit 0',
    `i=0; while [ ! -e "$d/exit" ] && [ $i -lt ${grace * 10} ]; do sleep 0.1; i=$((i+1)); done`,
    '[ -e "$d/exit" ] || kill -KILL -"$p" 2>/dev/null',
    'exit 0',
  ].join('\n');
}

/**
 * Lists the runs under way in `workdir` (one key a line): started on this boot of the host, not
 * ended, not stopped by their watchdog. A worker that starts counts them against the host's slots
 * until their attempts attach again.
 */
export function buildListRunsScript(workdir: string): string {
  return [
    `d=${shellQuote(`${workdir.replace(/\/+$/, '')}/.drover/runs`)}`,
    '[ -d "$d" ] || exit 0',
    'b=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)',
    'for r in "$d"/*; do',
    '  [ -d "$r" ] && [ -s "$r/pid" ] && [ ! -e "$r/exit" ] && [ ! -e "$r/fenced" ] || continue',
    '  [ "$(cat "$r/boot_id" 2>/dev/null)" = "$b" ] || continue',
    '  basename -- "$r"',
    'done',
    'exit 0',
  ].join('\n');
}
