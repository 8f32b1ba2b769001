// A small local stand-in for the Anthropic Messages API, for running the real Claude Code CLI in
// tests (ANTHROPIC_BASE_URL=http://127.0.0.1:<port>): never a model, driven by a script of turns.
//
// The wire shapes follow Anthropic's documentation, not guesses:
// - streaming (https://docs.anthropic.com/en/api/messages-streaming, "Streaming messages" on
//   platform.claude.com/docs/build-with-claude/streaming): each event is `event: <type>` plus
//   `data: <json with the same type>`; the flow is message_start (a Message with empty `content`
//   and `usage` {input_tokens, cache_creation_input_tokens, cache_read_input_tokens, output_tokens}),
//   then per content block content_block_start / content_block_delta… / content_block_stop
//   (`text_delta` {text} for text blocks; for tool_use blocks the start carries
//   {type:"tool_use", id:"toolu_…", name, input:{}} and the input arrives as `input_json_delta`
//   {partial_json} string pieces), `ping` events anywhere, then message_delta
//   ({delta:{stop_reason, stop_sequence}, usage:{output_tokens}}) and message_stop;
// - non-streamed responses (https://docs.anthropic.com/en/api/messages): the whole Message object;
// - errors (https://docs.anthropic.com/en/api/errors): HTTP 400 invalid_request_error,
//   401 authentication_error, 403 permission_error, 404 not_found_error, 429 rate_limit_error,
//   500 api_error, 529 overloaded_error; the body is
//   {"type":"error","error":{"type":…,"message":…},"request_id":"req_…"} and every response
//   carries a `request-id` header;
// - token counting (https://docs.anthropic.com/en/api/messages-count-tokens): {"input_tokens": n}.
//
// What Claude Code 2.1.328 sends in `-p` mode (seen by logging every request): `POST /v1/messages?beta=true`
// with `stream: true`, its tools and an `anthropic-beta` header, one per model turn; after a 400 it
// tries the same turn again with fewer beta features (up to 6 requests), so an error turn answers
// every later turn request too; 5xx/529 are retried with backoff unless CLAUDE_CODE_MAX_RETRIES=0 or
// the response says `x-should-retry: false`; `HEAD /api/hello` (a connectivity check) unless
// CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1. No token counting or side calls (titles, quota probes)
// were seen, but they are answered without using up the script: see `isSideCall`.
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** One content block the scripted model answers with. */
export type FakeBlock = { type: 'text'; text: string } | { type: 'tool_use'; name: string; input: Record<string, unknown>; id?: string };

/** One scripted model turn: content blocks (a tool use ends the turn with `tool_use`), or an API error. */
export type FakeTurn =
  | { content: FakeBlock[]; usage?: Partial<FakeUsage> }
  | { error: { status: number; type: string; message: string; shouldRetry?: boolean } };

export interface FakeUsage {
  input_tokens: number;
  output_tokens: number;
  cache_creation_input_tokens: number;
  cache_read_input_tokens: number;
}

export const text = (t: string): FakeBlock => ({ type: 'text', text: t });
export const toolUse = (name: string, input: Record<string, unknown>): FakeBlock => ({ type: 'tool_use', name, input });
export const turn = (...content: FakeBlock[]): FakeTurn => ({ content });
/** An API error; `shouldRetry` sets the `x-should-retry` header the API may send (Anthropic's SDK obeys it). */
export const apiError = (status: number, type: string, message: string, shouldRetry?: boolean): FakeTurn => ({ error: { status, type, message, shouldRetry } });

export interface RecordedRequest {
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
  /** What the fake made of it: a scripted turn (`turn` = its index), a side call, or something else. */
  kind: 'turn' | 'side' | 'count_tokens' | 'other';
  turn?: number;
}

export interface FakeAnthropic {
  url: string;
  requests: RecordedRequest[];
  /** Scripted turns answered so far. */
  readonly turnsServed: number;
  /** Replaces the script (turns not yet served are dropped). */
  script(turns: FakeTurn[]): void;
  close(): Promise<void>;
}

const DEFAULT_USAGE: FakeUsage = { input_tokens: 100, output_tokens: 20, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 };

function id(prefix: string): string {
  return `${prefix}_01${randomBytes(12).toString('hex')}`;
}

export interface MessagesRequest {
  model?: string;
  stream?: boolean;
  system?: unknown;
  tools?: unknown[];
  messages?: Array<{ role: string; content: unknown }>;
  max_tokens?: number;
}

/**
 * Whether a Messages request is the CLI's own side call (title or topic generation, a quota probe…)
 * rather than a turn of the agent's conversation: the agent's turns are the requests that offer the
 * CLI's tools; side calls offer none.
 */
export function isSideCall(body: MessagesRequest): boolean {
  return !Array.isArray(body.tools) || body.tools.length === 0;
}

function blocksOf(turn: { content: FakeBlock[] }): Array<Record<string, unknown>> {
  return turn.content.map((b) => (b.type === 'text' ? { type: 'text', text: b.text } : { type: 'tool_use', id: b.id ?? id('toolu'), name: b.name, input: b.input }));
}

function message(model: string, content: Array<Record<string, unknown>>, usage: FakeUsage): Record<string, unknown> {
  const stop = content.some((b) => b.type === 'tool_use') ? 'tool_use' : 'end_turn';
  return { id: id('msg'), type: 'message', role: 'assistant', model, content, stop_reason: stop, stop_sequence: null, usage };
}

function sse(res: ServerResponse, event: string, data: Record<string, unknown>): void {
  res.write(`event: ${event}\ndata: ${JSON.stringify({ type: event, ...data })}\n\n`);
}

/** Streams a whole message as the documented event sequence. */
function streamMessage(res: ServerResponse, msg: Record<string, unknown>): void {
  const content = msg.content as Array<Record<string, unknown>>;
  const usage = msg.usage as FakeUsage;
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'request-id': id('req') });
  sse(res, 'message_start', { message: { ...msg, content: [], stop_reason: null, stop_sequence: null, usage: { ...usage, output_tokens: 1 } } });
  content.forEach((block, index) => {
    if (block.type === 'text') {
      sse(res, 'content_block_start', { index, content_block: { type: 'text', text: '' } });
      if (index === 0) sse(res, 'ping', {});
      const t = String(block.text);
      // In a few pieces, as the API does.
      const pieces = t.length ? (t.match(/[\s\S]{1,40}/g) ?? []) : [];
      for (const piece of pieces) sse(res, 'content_block_delta', { index, delta: { type: 'text_delta', text: piece } });
    } else {
      sse(res, 'content_block_start', { index, content_block: { type: 'tool_use', id: block.id, name: block.name, input: {} } });
      const json = JSON.stringify(block.input);
      sse(res, 'content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: '' } });
      for (const piece of json.match(/[\s\S]{1,30}/g) ?? []) sse(res, 'content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: piece } });
    }
    sse(res, 'content_block_stop', { index });
  });
  sse(res, 'message_delta', { delta: { stop_reason: msg.stop_reason, stop_sequence: null }, usage: { output_tokens: usage.output_tokens } });
  sse(res, 'message_stop', {});
  res.end();
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json', 'request-id': id('req') });
  res.end(JSON.stringify(body));
}

function sendError(res: ServerResponse, status: number, type: string, messageText: string, shouldRetry?: boolean): void {
  const headers: Record<string, string> = { 'content-type': 'application/json', 'request-id': id('req') };
  if (shouldRetry !== undefined) headers['x-should-retry'] = String(shouldRetry);
  res.writeHead(status, headers);
  res.end(JSON.stringify({ type: 'error', error: { type, message: messageText }, request_id: id('req') }));
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export interface FakeAnthropicOptions {
  /** What side calls are answered with. */
  sideText?: string;
  /** Tells side calls from the agent's turns (default: `isSideCall`). */
  sideCall?: (body: MessagesRequest) => boolean;
  /** Log every request on stderr. */
  log?: boolean;
}

/** Starts the fake on 127.0.0.1 (a free port), answering the agent's turns from the script. */
export async function startFakeAnthropic(turns: FakeTurn[] = [], options: FakeAnthropicOptions = {}): Promise<FakeAnthropic> {
  let script = [...turns];
  let served = 0;
  const requests: RecordedRequest[] = [];
  const sideText = options.sideText ?? 'Fake title';

  const server: Server = createServer((req, res) => {
    void (async () => {
      const raw = await readBody(req);
      let body: unknown;
      try {
        body = raw ? JSON.parse(raw) : undefined;
      } catch {
        body = raw;
      }
      const path = (req.url ?? '/').split('?')[0] ?? '/';
      const record: RecordedRequest = { method: req.method ?? 'GET', path, headers: req.headers, body, kind: 'other' };
      requests.push(record);
      if (options.log) process.stderr.write(`fake-anthropic: ${record.method} ${req.url} ${raw.slice(0, 300)}\n`);

      if (req.method === 'POST' && path === '/v1/messages/count_tokens') {
        record.kind = 'count_tokens';
        return sendJson(res, 200, { input_tokens: Math.max(1, Math.round(raw.length / 4)) });
      }
      if (req.method === 'POST' && path === '/v1/messages') {
        const request = (body ?? {}) as MessagesRequest;
        const model = request.model ?? 'claude-fake';
        if ((options.sideCall ?? isSideCall)(request)) {
          record.kind = 'side';
          const msg = message(model, [{ type: 'text', text: sideText }], { ...DEFAULT_USAGE, input_tokens: 10, output_tokens: 5 });
          return request.stream ? streamMessage(res, msg) : sendJson(res, 200, msg);
        }
        record.kind = 'turn';
        record.turn = served;
        // An error turn answers every later turn request too (the CLI retries some errors).
        const next = script[served] ?? (script.length && 'error' in script[script.length - 1]! ? script[script.length - 1] : undefined);
        served++;
        if (!next) return sendError(res, 400, 'invalid_request_error', `fake-anthropic: no scripted turn ${served - 1} (script has ${script.length})`);
        if ('error' in next) return sendError(res, next.error.status, next.error.type, next.error.message, next.error.shouldRetry);
        const msg = message(model, blocksOf(next), { ...DEFAULT_USAGE, ...next.usage });
        return request.stream ? streamMessage(res, msg) : sendJson(res, 200, msg);
      }
      if (path === '/api/hello') {
        // The CLI's connectivity check (HEAD), when non-essential traffic is not disabled.
        res.writeHead(200, { 'content-type': 'application/json' });
        return res.end(req.method === 'HEAD' ? undefined : '{}');
      }
      if (req.method === 'GET' && path.startsWith('/v1/models')) {
        return sendJson(res, 200, { data: [], has_more: false, first_id: null, last_id: null });
      }
      return sendError(res, 404, 'not_found_error', `fake-anthropic: no ${req.method} ${path}`);
    })().catch((err: unknown) => {
      if (!res.headersSent) sendError(res, 500, 'api_error', `fake-anthropic: ${String(err)}`);
      else res.destroy();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    get turnsServed() {
      return served;
    },
    script(next) {
      script = [...next];
      served = 0;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
