// Drives one agent run through the wrapper script (./shell.ts), wherever the process lives: an
// SSH channel or a local child process. It delivers the prompt on stdin, reads the output into
// the log and the provider's parser, and stops the run when asked.
import { StringDecoder } from 'node:string_decoder';
import type { Readable, Writable } from 'node:stream';
import type { TaskResult } from '../model';
import type { AgentExit, OutputParser } from '../providers';
import { PID_MARKER } from './shell';

/** A started wrapper script: its stdio and how it ended. */
export interface AgentProcess {
  stdin: Writable;
  stdout: Readable;
  stderr: Readable;
  /** Resolves once the process has exited and its output is drained; rejects when the transport breaks. */
  exit: Promise<AgentExit>;
}

export interface DriveOptions {
  process: AgentProcess;
  /** Written to stdin first (the wrapper script reads it); none for a detached run's follower. */
  prompt?: Buffer;
  parser: OutputParser;
  /** Aborting stops the run: stdin is closed (the wrapper kills the group), then `forceKill`. */
  signal: AbortSignal;
  /** Every piece of output, in arrival order (the pid marker excluded). */
  onOutput(text: string): void;
  onProgress(message: string): void;
  /** The wrapper is about to start the agent; `pid` is its process group. */
  onStarted?(pid: number): void;
  /** Kills the process group `pid` another way, when closing stdin was not enough. */
  forceKill?(pid: number): Promise<void>;
  /**
   * Stops the run `pid` directly, instead of closing stdin first (a detached run, which closing
   * the follower's stdin leaves running).
   */
  stopRun?(pid: number): Promise<void>;
  /** Aborting stops following a detached run without stopping it: the drive ends with RunDetachedError. */
  detach?: AbortSignal;
  /** How long the wrapper waits between SIGTERM and SIGKILL. */
  killGraceMs: number;
}

export class AgentStartError extends Error {
  override readonly name = 'AgentStartError';
  constructor(
    message: string,
    /** The exit code of what was to start the agent. */
    readonly exitCode: number | null = null,
  ) {
    super(message);
  }
}

/** A stopped run: the reason is the abort signal's. */
export class AgentStoppedError extends Error {
  override readonly name = 'AgentStoppedError';
}

/** Following a detached run ended (the worker is shutting down); the run itself goes on. */
export class RunDetachedError extends Error {
  override readonly name = 'RunDetachedError';
  readonly retryable = true;
}

const MAX_LINE_CHARS = 1_048_576;
const STDERR_TAIL_CHARS = 4_096;

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref?.());
}

export async function driveAgentProcess(options: DriveOptions): Promise<{ result: TaskResult; pid: number; exit: AgentExit }> {
  const { process: proc, parser } = options;
  let pid: number | undefined;
  let stderrTail = '';
  let partial = '';

  const handleLine = (line: string) => {
    if (pid === undefined) {
      const at = line.indexOf(PID_MARKER);
      if (at >= 0) {
        const n = Number(line.slice(at + PID_MARKER.length).trim());
        if (Number.isInteger(n) && n > 0) {
          pid = n;
          if (at > 0) options.onOutput(`${line.slice(0, at)}\n`);
          options.onStarted?.(n);
          return;
        }
      }
      options.onOutput(`${line}\n`); // login banner or shell noise before the agent starts
      return;
    }
    options.onOutput(`${line}\n`);
    try {
      const progress = parser.line(line);
      if (progress) options.onProgress(progress);
    } catch {
      // A parser never fails a run over one odd line.
    }
  };

  const stdoutDecoder = new StringDecoder('utf8');
  const onStdout = (text: string) => {
    partial += text;
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      handleLine(partial.slice(0, nl).replace(/\r$/, ''));
      partial = partial.slice(nl + 1);
    }
    if (partial.length > MAX_LINE_CHARS) {
      // An endless line: log it in pieces; the parser sees only whole lines.
      options.onOutput(partial);
      partial = '';
    }
  };
  proc.stdout.on('data', (chunk: Buffer) => onStdout(stdoutDecoder.write(chunk)));
  const stderrDecoder = new StringDecoder('utf8');
  proc.stderr.on('data', (chunk: Buffer) => {
    const text = stderrDecoder.write(chunk);
    stderrTail = (stderrTail + text).slice(-STDERR_TAIL_CHARS);
    options.onOutput(text);
  });

  let stopping = false;
  let abandon: (error: Error) => void = () => {};
  const abandoned = new Promise<never>((_, reject) => {
    abandon = reject;
  });
  abandoned.catch(() => {});
  const exitedBy = (ms: number) => Promise.race([proc.exit.then(() => true, () => true), delay(ms).then(() => false)]);
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    if (options.stopRun) {
      if (pid !== undefined) await options.stopRun(pid).catch(() => undefined);
      if (await exitedBy(5_000)) return;
    }
    proc.stdin.end();
    if (await exitedBy(options.killGraceMs + 3_000)) return;
    if (pid !== undefined && options.forceKill) await options.forceKill(pid).catch(() => undefined);
    // A process (or connection) that still does not end is given up on, so the caller is never stuck.
    if (!(await exitedBy(5_000))) abandon(new AgentStoppedError('the agent did not end after being killed; giving up on it'));
  };
  const onAbort = () => void stop();
  if (options.signal.aborted) onAbort();
  else options.signal.addEventListener('abort', onAbort, { once: true });
  let detached = false;
  const onDetach = () => {
    if (stopping) return;
    detached = true;
    proc.stdin.end();
    void exitedBy(5_000).then((exited) => {
      if (!exited) abandon(new RunDetachedError('stopped following the run (it goes on)'));
    });
  };
  if (options.detach?.aborted) onDetach();
  else options.detach?.addEventListener('abort', onDetach, { once: true });

  // The prompt, then stdin stays open: closing it is how the run is stopped.
  proc.stdin.on('error', () => {}); // a process that exits early closes its end; the exit tells the rest
  if (!stopping && !detached && options.prompt) proc.stdin.write(options.prompt);

  let exit: AgentExit;
  try {
    exit = await Promise.race([proc.exit, abandoned]);
  } finally {
    options.signal.removeEventListener('abort', onAbort);
    options.detach?.removeEventListener('abort', onDetach);
  }
  if (detached && !options.signal.aborted) throw new RunDetachedError('stopped following the run (it goes on)');
  onStdout(stdoutDecoder.end());
  if (partial) handleLine(partial);
  partial = '';
  const restErr = stderrDecoder.end();
  if (restErr) options.onOutput(restErr);
  // The agent is done: closing stdin lets the wrapper's watchdog exit without killing anything.
  proc.stdin.end();

  if (options.signal.aborted) {
    const reason = options.signal.reason;
    throw reason instanceof Error ? reason : new AgentStoppedError(`the run was stopped${reason ? `: ${String(reason)}` : ''}`);
  }
  if (pid === undefined) {
    const why = stderrTail.trim() || `exit code ${exit.code ?? exit.signal}`;
    throw new AgentStartError(`the agent did not start: ${why}`, exit.code);
  }
  return { result: parser.finish(exit, stderrTail), pid, exit };
}
