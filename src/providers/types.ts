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

export interface Provider {
  readonly name: ProviderName;
  /** The argv to run: the configured command plus what this provider adds (session resume). */
  argv(command: readonly string[], options: { resumeSessionId?: string }): string[];
  parser(): OutputParser;
}
