// Any command. Its result is its last JSON line `{"outcome":…,"summary":…,"branch":…,"rev":…}`
// if it printed one, otherwise its exit code (0 success, anything else fail). A JSON line with
// `session_id` names its session for later resumes (passed back as DROVER_RESUME_SESSION_ID).
import type { TaskResult } from '../model';
import { clip, describeExit, parseJsonLine, parseResultObject, progressLine } from './result-line';
import type { AgentExit, OutputParser, Provider } from './types';

class CommandParser implements OutputParser {
  sessionId: string | undefined;
  private declared: Omit<TaskResult, 'details'> | undefined;
  private lastLine = '';

  line(line: string): string | undefined {
    const json = parseJsonLine(line) as Record<string, unknown> | undefined;
    if (json) {
      const session = json.session_id ?? json.sessionId;
      if (typeof session === 'string' && session) this.sessionId = session;
      const declared = parseResultObject(json);
      if (declared) {
        this.declared = declared;
        return `result: ${declared.outcome}`;
      }
      return undefined;
    }
    if (!line.trim()) return undefined;
    this.lastLine = line;
    return progressLine(line);
  }

  finish(exit: AgentExit, stderrTail: string): TaskResult {
    const details: Record<string, unknown> = { provider: 'command', exitCode: exit.code };
    if (exit.signal) details.signal = exit.signal;
    if (this.sessionId) details.sessionId = this.sessionId;
    if (this.declared) return { ...this.declared, summary: this.declared.summary || this.declared.outcome, details };
    if (exit.code === 0) return { outcome: 'success', summary: clip(this.lastLine.trim()) || 'command exited 0', details };
    const why = stderrTail.trim() || this.lastLine.trim();
    return { outcome: 'fail', summary: `command failed (${describeExit(exit)})${why ? `: ${clip(why, 1_000)}` : ''}`, details };
  }
}

export const command: Provider = {
  name: 'command',
  argv: (cmd) => [...cmd],
  parser: () => new CommandParser(),
};
