// OpenCode, run headless: `opencode run --format json`, prompt on stdin. Output is one JSON
// event per line, each with `type`, `timestamp` and `sessionID`:
//   step_start · text (part.text) · tool_use (part.tool, part.state) · step_finish (part.cost,
//   part.tokens) · error (error.name, error.data.message)
// Resume: `--session <id>`. A final text may declare the result like every provider.
import type { TaskResult } from '../model';
import { clip, declaredResult, describeExit, parseJsonLine, progressLine } from './result-line';
import type { AgentExit, OutputParser, Provider } from './types';

class OpenCodeParser implements OutputParser {
  sessionId: string | undefined;
  private lastText: string | undefined;
  private error: string | undefined;
  private cost = 0;
  private steps = 0;

  line(line: string): string | undefined {
    const event = parseJsonLine(line) as Record<string, unknown> | undefined;
    if (!event || typeof event.type !== 'string') return undefined;
    const part = (event.part ?? {}) as Record<string, unknown>;
    const session = event.sessionID ?? part.sessionID;
    if (typeof session === 'string' && session) this.sessionId ??= session;
    switch (event.type) {
      case 'text':
        if (typeof part.text === 'string' && part.text.trim()) {
          this.lastText = part.text;
          return progressLine(part.text);
        }
        return undefined;
      case 'tool_use': {
        const state = (part.state ?? {}) as Record<string, unknown>;
        const input = (state.input ?? {}) as Record<string, unknown>;
        const hint = [input.command, input.filePath, input.path, input.pattern].find((v) => typeof v === 'string');
        return typeof part.tool === 'string' ? progressLine(`tool ${part.tool}${hint ? `: ${hint as string}` : ''}`) : undefined;
      }
      case 'step_finish':
        this.steps += 1;
        if (typeof part.cost === 'number') this.cost += part.cost;
        return undefined;
      case 'error': {
        const error = (event.error ?? {}) as Record<string, unknown>;
        const data = (error.data ?? {}) as Record<string, unknown>;
        const message = [data.message, error.message, error.name].find((v) => typeof v === 'string') as string | undefined;
        this.error = message ?? 'opencode reported an error';
        return progressLine(`error: ${this.error}`);
      }
      default:
        return undefined;
    }
  }

  finish(exit: AgentExit, stderrTail: string): TaskResult {
    const details: Record<string, unknown> = { provider: 'opencode', steps: this.steps };
    if (this.sessionId) details.sessionId = this.sessionId;
    if (this.cost > 0) details.costUsd = this.cost;
    if (this.error) return { outcome: 'fail', summary: clip(this.error), details };
    if (exit.code !== 0) {
      const why = stderrTail.trim() ? `: ${clip(stderrTail.trim(), 1_000)}` : '';
      return { outcome: 'fail', summary: `opencode failed (${describeExit(exit)})${why}`, details };
    }
    const text = this.lastText ?? '';
    const declared = declaredResult(text);
    if (declared) {
      const rest = text.trim().split('\n').slice(0, -1).join('\n').trim();
      return { ...declared, summary: declared.summary || clip(rest) || declared.outcome, details };
    }
    return { outcome: 'success', summary: clip(text.trim()) || 'done', details };
  }
}

export const openCode: Provider = {
  name: 'opencode',
  argv(command, { resumeSessionId }) {
    return resumeSessionId ? [...command, '--session', resumeSessionId] : [...command];
  },
  parser: () => new OpenCodeParser(),
};
