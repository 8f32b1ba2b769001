// POSIX shell quoting and the wrapper script every agent command runs in (over SSH, and locally
// for `drover agent`). The command line is built only from the config's argv and from values
// quoted here; the prompt never appears in it: it travels on stdin.

/** Quotes one word for a POSIX shell: inside single quotes nothing is special but `'` itself. */
export function shellQuote(value: string): string {
  if (value.includes('\0')) throw new Error('a shell word cannot contain a NUL byte');
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** `NAME='value'` for `env`; NUL bytes (which no environment can hold) are dropped from values. */
export function envAssignment(name: string, value: string): string {
  if (!ENV_NAME.test(name)) throw new Error(`invalid environment variable name ${JSON.stringify(name)}`);
  return shellQuote(`${name}=${value.replaceAll('\0', '')}`);
}

/** First stdout line of the wrapper: the process (group) id of the run, before the agent starts. */
export const PID_MARKER = '\u001edrover-pid ';

export interface RunScriptOptions {
  /** Directory the agent runs in. */
  workdir: string;
  env: Record<string, string>;
  /** The agent command: config argv plus what the provider adds. */
  argv: string[];
  /** Exact byte length of the prompt the caller writes to stdin first. */
  promptBytes: number;
  /** Seconds between SIGTERM and SIGKILL when the run is stopped. */
  killGraceSeconds: number;
}

/**
 * The `sh` script that runs one agent. Protocol, on the script's stdin/stdout:
 * - the caller writes exactly `promptBytes` bytes of prompt to stdin and keeps stdin open (if
 *   stdin ends sooner, the script exits 125 without starting the agent);
 * - the script saves the prompt to a private temp file, prints `PID_MARKER<pid>`, and runs the
 *   agent with that file as its stdin; it is the leader of its process group (sshd starts every
 *   session in a new session; `drover agent` spawns it detached), so the agent's whole process
 *   tree shares the group `<pid>`;
 * - a watchdog waits for the rest of stdin: when stdin closes before the agent has finished
 *   (the caller cancels, or the connection or the calling process dies), it sends SIGTERM to
 *   the group and SIGKILL after the grace period. So no agent outlives the one who started it.
 */
export function buildRunScript(options: RunScriptOptions): string {
  if (!Number.isInteger(options.promptBytes) || options.promptBytes < 0) throw new Error('promptBytes must be a byte count');
  const grace = Math.max(0, Math.ceil(options.killGraceSeconds));
  const env = Object.entries(options.env).map(([name, value]) => envAssignment(name, value));
  if (options.argv.length === 0) throw new Error('the agent command is empty');
  const command = ['env', '--', ...env, ...options.argv.map(shellQuote)].join(' ');
  return [
    'exec 3<&0',
    `cd -- ${shellQuote(options.workdir)} || { echo "drover: cannot enter the working directory" >&2; exit 125; }`,
    'd=$(mktemp -d "${TMPDIR:-/tmp}/drover.XXXXXXXX") || exit 125',
    // A stdin that closes early (the caller died mid-write) leaves a short prompt: never run on it.
    `head -c ${options.promptBytes} > "$d/prompt" <&3 && [ $(wc -c < "$d/prompt") -eq ${options.promptBytes} ] || { echo "drover: the prompt did not arrive whole" >&2; rm -rf -- "$d"; exit 125; }`,
    `printf '${PID_MARKER.replace('\u001e', '\\036')}%s\\n' "$$"`,
    `( trap '' TERM INT HUP; cat <&3 >/dev/null; if [ ! -e "$d/done" ]; then rm -rf -- "$d"; kill -TERM -$$ 2>/dev/null || kill -TERM $$; sleep ${grace}; kill -KILL -$$ 2>/dev/null; fi; rm -rf -- "$d" ) >/dev/null 2>&1 &`,
    `${command} < "$d/prompt" 3<&-`,
    'rc=$?',
    ': > "$d/done"',
    'exit $rc',
  ].join('\n');
}

/** Characters that mean themselves in every login shell's single quotes, in sh's double quotes and in printf's format. */
const PLAIN = /^[ #&()*+,\-./0-9:;<=>?@A-Z[\]^_a-z{|}~]$/;

/**
 * The command line that runs the script under `/bin/sh` whatever the login shell. sshd runs exec
 * requests through the user's login shell, and shells quote differently: inside single quotes
 * fish reads `\'` and `\\` as escapes (a quoted value ending in a backslash would end the
 * quoting early, and what follows would run), csh refuses newlines. So the script travels as a
 * printf format in which every byte that is not plain is an octal escape: the login shell sees
 * one single-quoted word of plain characters, and only `/bin/sh` reads the script. `exec` keeps
 * the pid, so the script stays the session's group leader.
 */
export function shellCommandLine(script: string): string {
  if (script.includes('\0')) throw new Error('a script cannot contain a NUL byte');
  let format = '';
  for (const byte of Buffer.from(script, 'utf8')) {
    const char = String.fromCharCode(byte);
    format += PLAIN.test(char) && !(format === '' && char === '-') ? char : `\\${byte.toString(8).padStart(3, '0')}`;
  }
  return `exec /bin/sh -c 'eval "$(printf "${format}")"'`;
}
