// OpenCode, run headless: `opencode run --format json [--session <id>]`, prompt on stdin. stdout is
// one JSON event per line, each `{"type","timestamp","sessionID",…}` (shapes as the real CLI, 1.18.x,
// prints them; see test/fixtures/opencode/*.jsonl for whole captured runs):
//   {"type":"step_start","part":{"type":"step-start",…}}
//   {"type":"text","part":{"type":"text","text":"…","time":{"start","end"}}}        (a finished text part)
//   {"type":"tool_use","part":{"type":"tool","tool":"write","callID":"…","state":{"status":"completed",
//     "input":{…},"output":"…","title":"…"}}}                                       (once a tool call ends)
//     or "state":{"status":"error","input":{…},"error":"…"}; a refused call's error is one of
//       "The user rejected permission to use this specific tool call."            (`ask`, auto-rejected
//          headless; the CLI also says on stderr "! permission requested: edit (<path>); auto-rejecting"
//          and the session stops there, exit code 0)
//       "The user has specified a rule which prevents you from using this specific tool call. …" (`deny`
//          rule; the agent goes on)
//     a call of a tool the session does not offer (a blanket `deny` removes the tool) is tool "invalid",
//     status completed, input {"tool","error":"Model tried to call unavailable tool '…'. …"}
//   {"type":"step_finish","part":{"type":"step-finish","reason":"stop"|"tool-calls","cost":0.00012,
//     "tokens":{"total","input","output","reasoning","cache":{"read","write"}}}}   (one per model call;
//     input excludes cache reads, output excludes reasoning; a resumed session prints only this run's)
//   {"type":"error","error":{"name":"APIError","data":{"message":"…","statusCode":500,"isRetryable":true,
//     "responseBody":"…"}}}  (or "UnknownError", …; then exit code 1; retryable API errors are
//     retried 5 times first, silently)
// `--session <id>` of a session that does not exist prints nothing on stdout, "Error: Session not found"
// (coloured) on stderr and exits 1. The model is not in the events. A final text may declare the
// result like every provider.
import type { TaskResult } from '../model';
import { clip, declaredResult, describeExit, parseJsonLine, progressLine } from './result-line';
import type { AgentExit, OutputParser, ParserOptions, Provider, ResultDetails } from './types';

interface Denial {
  tool: string;
  input?: unknown;
  message?: string;
}

/** What the CLI says when `--session` names a session it does not have. */
const SESSION_LOST = /session not found/i;
/** Tool-call errors that are a permission refusal (rejected `ask`, or a `deny` rule). */
const REFUSED = /^The user (rejected permission to use this specific tool call|has specified a rule which prevents you from using this specific tool call)/;
/** stderr when a headless run auto-rejects an `ask`: "! permission requested: edit (a.txt, b.txt); auto-rejecting". */
const AUTO_REJECTED = /permission requested: (\S+) \((.*)\); auto-rejecting/g;
// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;]*[A-Za-z]/g;

function obj(value: unknown): Record<string, unknown> {
  return value && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
}

function num(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}

function toolHint(input: unknown): string | undefined {
  const args = obj(input);
  const hint = [args.command, args.filePath, args.path, args.pattern, args.url, args.description].find((v) => typeof v === 'string');
  return hint as string | undefined;
}

function toolProgress(tool: string, input: unknown): string {
  const hint = toolHint(input);
  return progressLine(`tool ${tool}${hint ? `: ${hint}` : ''}`);
}

/** The CLI's own error lines on stderr ("Error: …"), colours removed. */
function stderrErrors(stderr: string): string[] {
  return stderr
    .replace(ANSI, '')
    .split('\n')
    .map((l) => /^\s*Error:\s*(.+)$/.exec(l)?.[1]?.trim())
    .filter((l): l is string => !!l);
}

function denialText(denials: Denial[]): string {
  const what = denials.slice(0, 5).map((d) => toolProgress(d.tool, d.input).replace(/^tool /, ''));
  const more = denials.length > 5 ? ` and ${denials.length - 5} more` : '';
  return `opencode was refused ${denials.length} tool use${denials.length === 1 ? '' : 's'}: ${what.join('; ')}${more}`;
}

function unique(values: string[]): string[] {
  return [...new Set(values)];
}

class OpenCodeParser implements OutputParser {
  sessionId: string | undefined;
  private lastText: string | undefined;
  private errors: string[] = [];
  private apiErrorStatus: number | undefined;
  private lost = false;
  private lostSessionId: string | undefined;
  private events = 0;
  private steps = 0;
  private cost = 0;
  private tokens = { input: 0, output: 0, reasoning: 0, cacheRead: 0, cacheWrite: 0 };
  private sawTokens = false;
  private denied: Denial[] = [];
  private invalid: Array<{ tool: string; message?: string }> = [];

  constructor(private readonly options: ParserOptions = {}) {}

  line(line: string): string | undefined {
    const event = parseJsonLine(line) as Record<string, unknown> | undefined;
    if (!event || typeof event.type !== 'string') return undefined;
    this.events += 1;
    const part = obj(event.part);
    const session = event.sessionID ?? part.sessionID;
    switch (event.type) {
      case 'text':
        this.seen(session);
        if (typeof part.text === 'string' && part.text.trim()) {
          this.lastText = part.text;
          return progressLine(part.text);
        }
        return undefined;
      case 'tool_use':
        this.seen(session);
        return this.toolUse(part);
      case 'step_finish':
        this.seen(session);
        this.stepFinish(part);
        return undefined;
      case 'error':
        return this.error(event, session);
      default:
        this.seen(session);
        return undefined;
    }
  }

  private seen(session: unknown): void {
    if (!this.lost && typeof session === 'string' && session) this.sessionId ??= session;
  }

  private toolUse(part: Record<string, unknown>): string | undefined {
    const tool = typeof part.tool === 'string' ? part.tool : 'tool';
    const state = obj(part.state);
    const input = state.input;
    if (state.status === 'error' && typeof state.error === 'string' && REFUSED.test(state.error)) {
      this.denied.push({ tool, ...(input !== undefined ? { input } : {}), message: state.error });
      return progressLine(`permission denied: ${toolProgress(tool, input).replace(/^tool /, '')}`);
    }
    if (tool === 'invalid') {
      const asked = obj(input);
      const name = typeof asked.tool === 'string' ? asked.tool : 'tool';
      const message = typeof asked.error === 'string' ? asked.error : undefined;
      this.invalid.push({ tool: name, ...(message ? { message } : {}) });
      return progressLine(`invalid tool call: ${name}${message ? `: ${message}` : ''}`);
    }
    const progress = toolProgress(tool, input);
    return state.status === 'error' && typeof state.error === 'string' ? progressLine(`${progress} failed: ${state.error}`) : progress;
  }

  private stepFinish(part: Record<string, unknown>): void {
    this.steps += 1;
    const cost = num(part.cost);
    if (cost !== undefined) this.cost += cost;
    const tokens = obj(part.tokens);
    if (Object.keys(tokens).length === 0) return;
    this.sawTokens = true;
    const cache = obj(tokens.cache);
    this.tokens.input += num(tokens.input) ?? 0;
    this.tokens.output += num(tokens.output) ?? 0;
    this.tokens.reasoning += num(tokens.reasoning) ?? 0;
    this.tokens.cacheRead += num(cache.read) ?? 0;
    this.tokens.cacheWrite += num(cache.write) ?? 0;
  }

  private error(event: Record<string, unknown>, session: unknown): string {
    const error = obj(event.error);
    const data = obj(error.data);
    const message = [data.message, error.message, error.name].find((v) => typeof v === 'string' && v.trim()) as string | undefined;
    const text = message?.trim() ?? 'opencode reported an error';
    this.errors.push(text);
    const status = num(data.statusCode);
    if (status !== undefined) this.apiErrorStatus = status;
    if (SESSION_LOST.test(text)) this.markLost(typeof session === 'string' && session ? session : undefined);
    else this.seen(session);
    return progressLine(`error: ${text}`);
  }

  private markLost(dead: string | undefined): void {
    this.lost = true;
    if (dead) this.lostSessionId = dead;
    // The only id such a run can have seen is the dead one: no session to resume later.
    this.sessionId = undefined;
  }

  /** Refusals seen on stdout, plus any `ask` the CLI auto-rejected that only stderr tells of. */
  private denials(stderr: string): Denial[] {
    const denials = [...this.denied];
    if (denials.length === 0) {
      for (const m of stderr.replace(ANSI, '').matchAll(AUTO_REJECTED)) {
        denials.push({ tool: m[1] ?? 'tool', input: { patterns: (m[2] ?? '').split(', ').filter(Boolean) }, message: 'auto-rejected (headless)' });
      }
    }
    return denials;
  }

  finish(exit: AgentExit, stderrTail: string): TaskResult {
    const details: ResultDetails = { provider: 'opencode', steps: this.steps };
    const errors = unique([...this.errors, ...stderrErrors(stderrTail)]);
    if (!this.lost && errors.some((e) => SESSION_LOST.test(e))) this.markLost(undefined);
    if (this.lost) {
      details.sessionLost = true;
      if (this.lostSessionId) details.lostSessionId = this.lostSessionId;
    }
    if (this.sessionId) details.sessionId = this.sessionId;
    if (this.steps > 0 || this.cost > 0) details.costUsd = this.cost;
    if (this.sawTokens) {
      const t = this.tokens;
      details.tokens = { input: t.input, output: t.output + t.reasoning, cacheRead: t.cacheRead, cacheWrite: t.cacheWrite };
      if (t.reasoning) details.reasoningTokens = t.reasoning;
    }
    if (errors.length) details.errors = errors;
    if (this.apiErrorStatus !== undefined) details.apiErrorStatus = this.apiErrorStatus;
    if (this.invalid.length) details.invalidToolCalls = this.invalid;
    const denials = this.denials(stderrTail);
    if (denials.length) details.permissionDenials = denials;
    const failByDenials = denials.length > 0 && (this.options.permissionDenials ?? 'fail') === 'fail';

    let result: TaskResult;
    if (this.lost) {
      result = { outcome: 'fail', summary: clip(`opencode could not resume the session: ${errors.find((e) => SESSION_LOST.test(e)) ?? 'Session not found'}`), details };
    } else if (this.errors.length) {
      result = { outcome: 'fail', summary: clip(unique(this.errors).join('; ')), details };
    } else if (exit.code !== 0) {
      const why = errors.length ? errors.join('; ') : stderrTail.replace(ANSI, '').trim();
      result = { outcome: 'fail', summary: clip(`opencode failed (${describeExit(exit)})${why ? `: ${clip(why, 1_000)}` : ''}`), details };
    } else if (this.events === 0) {
      // Not `--format json`, or the CLI said nothing at all: no result to read.
      const said = stderrTail.replace(ANSI, '').trim();
      result = { outcome: 'fail', summary: clip(`opencode printed no JSON events (${describeExit(exit)}); is it run with --format json?${said ? ` ${clip(said, 1_000)}` : ''}`), details };
    } else {
      const text = this.lastText ?? '';
      const declared = declaredResult(text);
      if (declared) {
        const rest = text.trim().split('\n').slice(0, -1).join('\n').trim();
        result = { ...declared, summary: declared.summary || clip(rest) || declared.outcome, details };
      } else result = { outcome: 'success', summary: clip(text.trim()) || 'done', details };
    }
    if (failByDenials && result.outcome !== 'fail') {
      const agentSaid = this.lastText?.trim() ? `\nThe agent said: ${result.summary}` : '';
      return { outcome: 'fail', summary: clip(`${denialText(denials)}${agentSaid}`), details };
    }
    if (failByDenials) return { ...result, summary: clip(`${denialText(denials)}\n${result.summary}`) };
    return result;
  }
}

export const openCode: Provider = {
  name: 'opencode',
  argv(command, { resumeSessionId }) {
    return resumeSessionId ? [...command, '--session', resumeSessionId] : [...command];
  },
  parser: (options) => new OpenCodeParser(options),
};
