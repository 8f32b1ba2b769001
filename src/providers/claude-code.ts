// Claude Code, run headless: `claude -p --output-format stream-json --verbose`, prompt on stdin.
// stream-json is one JSON object per line (shapes as the real CLI, 2.1.x, prints them; see
// test/fixtures/claude-code/*.jsonl for whole captured runs):
//   {"type":"system","subtype":"init","session_id":"…","model":"…","permissionMode":"default","tools":[…],…}
//   {"type":"assistant","message":{"content":[{"type":"text","text":"…"}],…},"parent_tool_use_id":null,"session_id":"…"}
//     (one line per content block; an API error is a synthetic one: "model":"<synthetic>",
//      "is_api_error_message":true, "api_error_status":529, text "API Error: 529 …")
//   {"type":"system","subtype":"permission_denied","tool_name":"Write","tool_use_id":"…","message":"Claude requested permissions…"}
//   {"type":"user","message":{"content":[{"type":"tool_result",…}]}}
//   {"type":"result","subtype":"success"|"error_max_turns"|"error_during_execution",…,"is_error":false,
//    "result":"…" (absent on error subtypes, "" after an empty final turn),"errors":["…"] (error subtypes),
//    "session_id":"…","total_cost_usd":0.12 (the whole session's, earlier runs of a resumed one included),
//    "model_usage_since_last_result":{"<model>":{"costUSD":0.05,"inputTokens":…,…}} (this run's own),
//    "usage":{"input_tokens","output_tokens","cache_read_input_tokens","cache_creation_input_tokens"} (this run's),
//    "permission_denials":[{"tool_name":"Write","tool_use_id":"…","tool_input":{…}}],
//    "api_error_status":null|529,"api_error_type":…,"terminal_reason":"completed"|"api_error"|"max_turns"|…,
//    "num_turns":7,"duration_ms":…}
// An API error ends with subtype "success" but is_error true. `--resume` of an unknown session prints no
// init, only an error_during_execution result with errors ["No conversation found with session ID: <id>"].
// The last line of the final message may declare the result: {"outcome":…,"summary":…,"branch":…,"rev":…}.
import type { TaskResult } from '../model';
import { clip, declaredResult, describeExit, parseJsonLine, progressLine } from './result-line';
import type { AgentExit, OutputParser, ParserOptions, Provider, ResultDetails } from './types';

interface ResultEvent {
  subtype?: string;
  is_error?: boolean;
  result?: string;
  errors?: unknown;
  session_id?: string;
  total_cost_usd?: number;
  model_usage_since_last_result?: unknown;
  usage?: unknown;
  permission_denials?: unknown;
  api_error_status?: number | null;
  api_error_type?: string | null;
  terminal_reason?: string;
  num_turns?: number;
  duration_ms?: number;
}

interface Denial {
  tool: string;
  input?: unknown;
  toolUseId?: string;
  message?: string;
}

/** What the CLI says when `--resume` names a session it does not have. */
const SESSION_LOST = /No conversation found with session ID/i;

function toolProgress(name: string, input: unknown): string {
  const args = input && typeof input === 'object' ? (input as Record<string, unknown>) : {};
  const hint = [args.command, args.file_path, args.path, args.pattern, args.url, args.description].find((v) => typeof v === 'string');
  return progressLine(`tool ${name}${hint ? `: ${hint as string}` : ''}`);
}

function strings(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string' && v.trim() !== '') : [];
}

function num(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}

/** This run's own cost: the sum over models of `model_usage_since_last_result`, when the CLI reports it. */
function ownCost(sinceLast: unknown): number | undefined {
  if (!sinceLast || typeof sinceLast !== 'object' || Array.isArray(sinceLast)) return undefined;
  let total = 0;
  for (const usage of Object.values(sinceLast as Record<string, unknown>)) {
    const cost = num((usage as { costUSD?: unknown } | null)?.costUSD);
    if (cost !== undefined) total += cost;
  }
  return total;
}

function tokensOf(usage: unknown): ResultDetails['tokens'] {
  if (!usage || typeof usage !== 'object') return undefined;
  const u = usage as Record<string, unknown>;
  const input = num(u.input_tokens);
  const output = num(u.output_tokens);
  if (input === undefined && output === undefined) return undefined;
  return { input: input ?? 0, output: output ?? 0, cacheRead: num(u.cache_read_input_tokens) ?? 0, cacheWrite: num(u.cache_creation_input_tokens) ?? 0 };
}

function denialText(denials: Denial[], permissionMode: string | undefined): string {
  const what = denials.slice(0, 5).map((d) => toolProgress(d.tool, d.input).replace(/^tool /, ''));
  const more = denials.length > 5 ? ` and ${denials.length - 5} more` : '';
  const mode = permissionMode ? ` in permission mode ${permissionMode}` : '';
  return `claude-code was refused ${denials.length} tool use${denials.length === 1 ? '' : 's'}${mode}: ${what.join('; ')}${more}`;
}

class ClaudeCodeParser implements OutputParser {
  sessionId: string | undefined;
  private result: ResultEvent | undefined;
  private lastText: string | undefined;
  /** The last assistant text whose last line declares a result. */
  private lastDeclaring: string | undefined;
  private apiErrorText: string | undefined;
  private model: string | undefined;
  private permissionMode: string | undefined;
  /** Refusals seen on `system`/`permission_denied` lines (the result line lists them too). */
  private denied: Denial[] = [];

  constructor(private readonly options: ParserOptions = {}) {}

  line(line: string): string | undefined {
    const event = parseJsonLine(line) as Record<string, unknown> | undefined;
    if (!event || typeof event.type !== 'string') return undefined;
    if (event.type !== 'result' && typeof event.session_id === 'string' && event.session_id) this.sessionId ??= event.session_id;
    switch (event.type) {
      case 'system':
        return this.system(event);
      case 'assistant':
        return this.assistant(event);
      case 'result': {
        const r = event as ResultEvent;
        this.result = r;
        if (this.lost()) this.sessionId = undefined;
        else if (typeof r.session_id === 'string' && r.session_id) this.sessionId = r.session_id;
        const reason = this.failureReason();
        const refused = Array.isArray(r.permission_denials) ? r.permission_denials.length : 0;
        const note = refused ? ` (${refused} tool use${refused === 1 ? '' : 's'} refused)` : '';
        return progressLine(`finished: ${this.subtype() ?? 'result'}${note}${reason ? `: ${reason}` : ''}`);
      }
      default:
        return undefined;
    }
  }

  private system(event: Record<string, unknown>): string | undefined {
    if (event.subtype === 'init') {
      if (typeof event.session_id === 'string') this.sessionId = event.session_id;
      if (typeof event.model === 'string') this.model = event.model;
      if (typeof event.permissionMode === 'string') this.permissionMode = event.permissionMode;
      return `session ${this.sessionId ?? '?'} started${this.model ? ` (${this.model})` : ''}`;
    }
    if (event.subtype === 'permission_denied') {
      const tool = typeof event.tool_name === 'string' ? event.tool_name : 'tool';
      const message = typeof event.message === 'string' ? event.message : undefined;
      this.denied.push({ tool, toolUseId: typeof event.tool_use_id === 'string' ? event.tool_use_id : undefined, message });
      return progressLine(`permission denied: ${tool}${message ? `: ${message}` : ''}`);
    }
    if (event.subtype === 'informational' && (event.level === 'warning' || event.level === 'error') && typeof event.content === 'string') {
      return progressLine(`${event.level}: ${event.content}`);
    }
    return undefined;
  }

  private assistant(event: Record<string, unknown>): string | undefined {
    const message = event.message as { content?: unknown; model?: unknown } | undefined;
    const content = message?.content;
    if (!Array.isArray(content)) return undefined;
    // A subagent's messages (parent_tool_use_id set) are not the agent's final word.
    const own = event.parent_tool_use_id === undefined || event.parent_tool_use_id === null;
    const apiError = event.is_api_error_message === true;
    let progress: string | undefined;
    for (const block of content as Array<Record<string, unknown>>) {
      if (block?.type === 'text' && typeof block.text === 'string' && block.text.trim()) {
        if (apiError) this.apiErrorText = block.text.trim();
        else if (own) {
          this.lastText = block.text;
          if (declaredResult(block.text)) this.lastDeclaring = block.text;
        }
        progress = progressLine(block.text);
      } else if (block?.type === 'tool_use' && typeof block.name === 'string') {
        progress = toolProgress(block.name, block.input);
      }
    }
    return progress;
  }

  private lost(): boolean {
    const r = this.result;
    return !!r && r.subtype !== 'success' && strings(r.errors).some((e) => SESSION_LOST.test(e));
  }

  private apiFailed(): boolean {
    const r = this.result;
    return !!r && r.is_error === true && (r.subtype === undefined || r.subtype === 'success');
  }

  /** The CLI's subtype, except that an API error (subtype "success", is_error true) is `api_error`. */
  private subtype(): string | undefined {
    const r = this.result;
    if (!r) return undefined;
    if (this.apiFailed()) return typeof r.api_error_status === 'number' || r.terminal_reason === 'api_error' || this.apiErrorText ? 'api_error' : 'error';
    return r.subtype;
  }

  private failed(): boolean {
    const r = this.result;
    return !!r && (r.is_error === true || (r.subtype !== undefined && r.subtype !== 'success'));
  }

  /** Why the run failed, in the CLI's words: its `errors`, or the result text (an API error's message). */
  private failureReason(): string | undefined {
    const r = this.result;
    if (!r || !this.failed()) return undefined;
    const errors = strings(r.errors);
    if (errors.length) return errors.join('; ');
    if (typeof r.result === 'string' && r.result.trim()) return r.result.trim();
    return this.apiErrorText;
  }

  /** Refusals: the result line's `permission_denials`, plus any only seen on `permission_denied` lines. */
  private denials(): Denial[] {
    const listed: Denial[] = [];
    const raw = this.result?.permission_denials;
    if (Array.isArray(raw)) {
      for (const d of raw as Array<Record<string, unknown> | null>) {
        if (!d || typeof d !== 'object') continue;
        listed.push({ tool: typeof d.tool_name === 'string' ? d.tool_name : 'tool', input: d.tool_input, toolUseId: typeof d.tool_use_id === 'string' ? d.tool_use_id : undefined });
      }
    }
    const known = new Set(listed.map((d) => d.toolUseId).filter(Boolean));
    for (const d of this.denied) {
      const same = d.toolUseId ? listed.find((l) => l.toolUseId === d.toolUseId) : undefined;
      if (same) same.message ??= d.message;
      else if (!d.toolUseId || !known.has(d.toolUseId)) listed.push(d);
    }
    return listed;
  }

  finish(exit: AgentExit, stderrTail: string): TaskResult {
    const details: ResultDetails = { provider: 'claude-code' };
    const r = this.result;
    const lost = r ? this.lost() : SESSION_LOST.test(stderrTail);
    if (lost) {
      details.sessionLost = true;
      this.sessionId = undefined;
      const dead = r?.session_id ?? /session ID:?\s*(\S+)/i.exec(stderrTail)?.[1];
      if (dead) details.lostSessionId = dead;
    }
    if (this.sessionId) details.sessionId = this.sessionId;
    if (this.model) details.model = this.model;
    if (this.permissionMode) details.permissionMode = this.permissionMode;
    const denials = this.denials();
    if (denials.length) details.permissionDenials = denials.map((d) => ({ tool: d.tool, ...(d.input !== undefined ? { input: d.input } : {}), ...(d.message ? { message: d.message } : {}) }));
    const failByDenials = denials.length > 0 && (this.options.permissionDenials ?? 'fail') === 'fail';

    if (!r) {
      const why = stderrTail.trim() ? `: ${clip(stderrTail.trim(), 1_000)}` : '';
      const summary = `claude-code ended without a result (${describeExit(exit)})${why}`;
      return { outcome: 'fail', summary: failByDenials ? clip(`${denialText(denials, this.permissionMode)}\n${summary}`) : summary, details };
    }

    const own = ownCost(r.model_usage_since_last_result);
    const total = num(r.total_cost_usd);
    if (own !== undefined) {
      details.costUsd = own;
      if (total !== undefined) details.sessionCostUsd = total;
    } else if (total !== undefined) details.costUsd = total;
    const tokens = tokensOf(r.usage);
    if (tokens) details.tokens = tokens;
    if (typeof r.num_turns === 'number') details.numTurns = r.num_turns;
    if (typeof r.duration_ms === 'number') details.durationMs = r.duration_ms;
    const subtype = this.subtype();
    if (subtype) details.subtype = subtype;
    const errors = strings(r.errors);
    if (errors.length) details.errors = errors;
    if (this.apiFailed()) {
      if (typeof r.api_error_status === 'number') details.apiErrorStatus = r.api_error_status;
      if (typeof r.api_error_type === 'string') details.apiErrorType = r.api_error_type;
    }

    let result: TaskResult;
    if (this.failed()) {
      const reason = this.failureReason();
      result = { outcome: 'fail', summary: clip(`claude-code failed (${subtype ?? describeExit(exit)})${reason ? `: ${reason}` : ''}`), details };
    } else {
      // After an empty final turn `result` is "": the agent's last words are in an earlier message.
      const text = typeof r.result === 'string' && r.result.trim() ? r.result : (this.lastDeclaring ?? this.lastText ?? '');
      const declared = declaredResult(text);
      if (declared) {
        const rest = text.trim().split('\n').slice(0, -1).join('\n').trim();
        result = { ...declared, summary: declared.summary || clip(rest) || declared.outcome, details };
      } else result = { outcome: 'success', summary: clip(text.trim()) || 'done', details };
    }
    if (failByDenials) {
      const agentSaid = result.summary ? `\n${result.outcome === 'fail' ? '' : 'The agent said: '}${result.summary}` : '';
      return { outcome: 'fail', summary: clip(`${denialText(denials, this.permissionMode)}${agentSaid}`), details };
    }
    return result;
  }
}

export const claudeCode: Provider = {
  name: 'claude-code',
  argv(command, { resumeSessionId }) {
    return resumeSessionId ? [...command, '--resume', resumeSessionId] : [...command];
  },
  parser: (options) => new ClaudeCodeParser(options),
};
