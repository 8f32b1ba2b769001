// A provider knows how to run one kind of agent CLI and how to read its output into a result.
import type { TaskResult } from '../model';

export type ProviderName = 'claude-code' | 'opencode' | 'command';

export interface AgentExit {
  /** Exit code, or null when the process was killed by a signal. */
  code: number | null;
  signal?: string | null;
}

/** Reads one run's stdout, line by line, into progress messages and finally a result. */
export interface OutputParser {
  /** One stdout line (no newline). Returns a short progress message for operators, if any. */
  line(line: string): string | undefined;
  /** The agent's session id once it has said it (Claude Code's init, OpenCode's sessionID…). */
  readonly sessionId: string | undefined;
  /** The result once the agent has exited; `stderrTail` explains failures. */
  finish(exit: AgentExit, stderrTail: string): TaskResult;
}

/**
 * What a run's result says in `details`, whatever the provider (each sets what its CLI reports):
 * - `provider`, `model`, `sessionId`;
 * - `costUsd`: this run's own cost (a resumed session's earlier runs excluded); `sessionCostUsd`:
 *   the whole session's, when the CLI reports that too;
 * - `tokens`: this run's `{ input, output, cacheRead, cacheWrite }`;
 * - `sessionLost: true`: the run failed because the session it was to resume does not exist
 *   (the runner then starts a fresh session, once, in the same attempt);
 * - `permissionDenials`: tool uses the CLI refused; `errors`: the CLI's own error messages.
 */
export interface ResultDetails {
  provider: ProviderName;
  model?: string;
  sessionId?: string;
  costUsd?: number;
  sessionCostUsd?: number;
  tokens?: { input: number; output: number; cacheRead?: number; cacheWrite?: number };
  sessionLost?: boolean;
  permissionDenials?: Array<{ tool: string; input?: unknown }>;
  errors?: string[];
  [extra: string]: unknown;
}

export interface ParserOptions {
  /**
   * Tool uses the agent CLI refused (its permission mode did not allow them): `fail` the task
   * (default), or `flag` them in the result's details and keep the agent's outcome.
   */
  permissionDenials?: 'fail' | 'flag';
}

export interface Provider {
  readonly name: ProviderName;
  /** The argv to run: the configured command plus what this provider adds (session resume). */
  argv(command: readonly string[], options: { resumeSessionId?: string }): string[];
  parser(options?: ParserOptions): OutputParser;
}
