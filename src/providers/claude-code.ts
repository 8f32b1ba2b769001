// Claude Code, run headless: `claude -p --output-format stream-json --verbose`, prompt on stdin.
// stream-json is one JSON object per line:
//   {"type":"system","subtype":"init","session_id":"…","model":"…","tools":[…]}
//   {"type":"assistant","message":{"content":[{"type":"text","text":"…"},{"type":"tool_use","name":"Bash","input":{…}}]}}
//   {"type":"user","message":{"content":[{"type":"tool_result",…}]}}
//   {"type":"result","subtype":"success","is_error":false,"result":"…","session_id":"…","total_cost_usd":0.12,"num_turns":7,"duration_ms":…}
// The last line of the final message may declare the result: {"outcome":…,"summary":…,"branch":…,"rev":…}.
import type { TaskResult } from '../model';
import { clip, declaredResult, describeExit, parseJsonLine, progressLine } from './result-line';
import type { AgentExit, OutputParser, Provider } from './types';

interface ResultEvent {
  subtype?: string;
  is_error?: boolean;
  result?: string;
  session_id?: string;
  total_cost_usd?: number;
  num_turns?: number;
  duration_ms?: number;
}

function toolProgress(name: string, input: unknown): string {
  const args = input && typeof input === 'object' ? (input as Record<string, unknown>) : {};
  const hint = [args.command, args.file_path, args.path, args.pattern, args.url, args.description].find((v) => typeof v === 'string');
  return progressLine(`tool ${name}${hint ? `: ${hint as string}` : ''}`);
}

class ClaudeCodeParser implements OutputParser {
  sessionId: string | undefined;
  private result: ResultEvent | undefined;
  private lastText: string | undefined;
  private model: string | undefined;

  line(line: string): string | undefined {
    const event = parseJsonLine(line) as Record<string, unknown> | undefined;
    if (!event || typeof event.type !== 'string') return undefined;
    if (typeof event.session_id === 'string' && event.session_id) this.sessionId ??= event.session_id;
    switch (event.type) {
      case 'system':
        if (event.subtype === 'init') {
          if (typeof event.session_id === 'string') this.sessionId = event.session_id;
          if (typeof event.model === 'string') this.model = event.model;
          return `session ${this.sessionId ?? '?'} started${this.model ? ` (${this.model})` : ''}`;
        }
        return undefined;
      case 'assistant': {
        const content = (event.message as { content?: unknown } | undefined)?.content;
        if (!Array.isArray(content)) return undefined;
        let progress: string | undefined;
        for (const block of content as Array<Record<string, unknown>>) {
          if (block?.type === 'text' && typeof block.text === 'string' && block.text.trim()) {
            this.lastText = block.text;
            progress = progressLine(block.text);
          } else if (block?.type === 'tool_use' && typeof block.name === 'string') {
            progress = toolProgress(block.name, block.input);
          }
        }
        return progress;
      }
      case 'result':
        this.result = event as ResultEvent;
        if (typeof event.session_id === 'string') this.sessionId = event.session_id;
        return `finished: ${(event.subtype as string | undefined) ?? 'result'}`;
      default:
        return undefined;
    }
  }

  finish(exit: AgentExit, stderrTail: string): TaskResult {
    const details: Record<string, unknown> = { provider: 'claude-code' };
    if (this.sessionId) details.sessionId = this.sessionId;
    if (this.model) details.model = this.model;
    const r = this.result;
    if (!r) {
      const why = stderrTail.trim() ? `: ${clip(stderrTail.trim(), 1_000)}` : '';
      return { outcome: 'fail', summary: `claude-code ended without a result (${describeExit(exit)})${why}`, details };
    }
    if (typeof r.total_cost_usd === 'number') details.costUsd = r.total_cost_usd;
    if (typeof r.num_turns === 'number') details.numTurns = r.num_turns;
    if (typeof r.duration_ms === 'number') details.durationMs = r.duration_ms;
    if (r.subtype) details.subtype = r.subtype;
    const text = typeof r.result === 'string' ? r.result : (this.lastText ?? '');
    const failed = r.is_error === true || (r.subtype !== undefined && r.subtype !== 'success');
    const declared = failed ? undefined : declaredResult(text);
    if (declared) {
      const rest = text.trim().split('\n').slice(0, -1).join('\n').trim();
      return { ...declared, summary: declared.summary || clip(rest) || declared.outcome, details };
    }
    const summary = clip(text.trim()) || (failed ? `claude-code failed (${r.subtype ?? describeExit(exit)})` : 'done');
    return { outcome: failed ? 'fail' : 'success', summary, details };
  }
}

export const claudeCode: Provider = {
  name: 'claude-code',
  argv(command, { resumeSessionId }) {
    return resumeSessionId ? [...command, '--resume', resumeSessionId] : [...command];
  },
  parser: () => new ClaudeCodeParser(),
};
