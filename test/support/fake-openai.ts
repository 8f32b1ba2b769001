// A small local fake of an OpenAI-compatible Chat Completions API, for running real agent CLIs
// (OpenCode) in tests without a model. node:http on 127.0.0.1, driven by a script of turns.
//
//   POST /v1/chat/completions   stream: true  → text/event-stream of `data: {chat.completion.chunk}`
//                                                lines, ending with `data: [DONE]`
//                               stream: false → one `chat.completion` JSON object
//   GET  /v1/models             → `{"object":"list","data":[{"id":…,"object":"model",…}]}`
//
// Wire format as in the OpenAI API reference, here as typed by the official client library
// (github.com/openai/openai-node, src/resources/chat/completions/completions.ts: ChatCompletion,
// ChatCompletionChunk with choices[].delta.{role,content,tool_calls[{index,id,type,function:
// {name,arguments}}]} and finish_reason 'stop' | 'tool_calls' | …; src/resources/completions.ts:
// CompletionUsage {prompt_tokens, completion_tokens, total_tokens, prompt_tokens_details:
// {cached_tokens}, completion_tokens_details: {reasoning_tokens}}). The streamed tool call sends
// id, type and function.name in its first delta and the JSON arguments in later fragments; with
// `stream_options: {"include_usage": true}` a last chunk has `choices: []` and the `usage`
// (every other chunk `usage: null`). Errors are HTTP 4xx/5xx with the API's error body
// `{"error": {"message", "type", "param", "code"}}` (openai-node src/core/error.ts reads these).
//
// Every request is recorded. Side calls an agent makes besides its main loop (OpenCode asks a
// small "title" agent to name the session; compaction/summary agents) are answered with a short
// text and do not consume scripted turns: a request is a side call when it offers no tools.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Usage {
  prompt: number;
  completion: number;
  /** Of `prompt`, read from the provider's cache (`prompt_tokens_details.cached_tokens`). */
  cached?: number;
  /** Of `completion`, reasoning (`completion_tokens_details.reasoning_tokens`). */
  reasoning?: number;
}

export interface ToolCall {
  name: string;
  /** The tool's arguments: an object (sent as JSON) or a raw string. */
  arguments: unknown;
  id?: string;
}

export type Turn =
  | { text: string; usage?: Usage }
  | { toolCalls: ToolCall[]; text?: string; usage?: Usage }
  /** An HTTP error with an OpenAI-style error body; `times` (default 1) consecutive requests get it. */
  | {
      error: { status: number; message: string; type?: string; code?: string | null };
      /** How many consecutive requests get this error (default 1). */
      times?: number;
      /** Sent as `retry-after-ms` (and `retry-after`, in seconds): how soon a client may retry. */
      retryAfterMs?: number;
    };

export interface RecordedRequest {
  method: string;
  path: string;
  /** When it arrived (ms since the epoch). */
  at: number;
  headers: IncomingMessage['headers'];
  body: Record<string, unknown> | undefined;
  /** Whether this request was a side call (no tools offered) answered outside the script. */
  side: boolean;
  /** Index of the scripted turn that answered it, if any. */
  turn?: number;
}

export interface FakeOpenAI {
  /** `http://127.0.0.1:<port>/v1` */
  baseURL: string;
  /** Every request, in arrival order. */
  requests: RecordedRequest[];
  /** Main-loop (non-side) chat requests. */
  chatRequests(): RecordedRequest[];
  /** Scripted turns not yet used. */
  remaining(): number;
  /** Appends more turns to the script. */
  script(...turns: Turn[]): void;
  close(): Promise<void>;
}

export interface FakeOpenAIOptions {
  /** The model ids `GET /v1/models` lists (default `['m']`). */
  models?: string[];
  /** What a side call (title generation, summaries) gets back (default `'Fake session'`). */
  sideText?: string;
  /** What a main-loop request gets when the script has run out (default: a plain `done` text). */
  whenExhausted?: Turn;
}

const DEFAULT_USAGE: Usage = { prompt: 10, completion: 5 };

function usageObject(usage: Usage): Record<string, unknown> {
  return {
    prompt_tokens: usage.prompt,
    completion_tokens: usage.completion,
    total_tokens: usage.prompt + usage.completion,
    prompt_tokens_details: { cached_tokens: usage.cached ?? 0 },
    completion_tokens_details: { reasoning_tokens: usage.reasoning ?? 0 },
  };
}

function argumentsText(args: unknown): string {
  return typeof args === 'string' ? args : JSON.stringify(args ?? {});
}

/** Splits a string into `n` roughly equal fragments (at least one), to stream in pieces. */
function fragments(text: string, n = 3): string[] {
  if (text.length <= n) return [text];
  const size = Math.ceil(text.length / n);
  const parts: string[] = [];
  for (let i = 0; i < text.length; i += size) parts.push(text.slice(i, i + size));
  return parts;
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function isSideCall(body: Record<string, unknown> | undefined): boolean {
  const tools = body?.tools;
  return !Array.isArray(tools) || tools.length === 0;
}

export async function startFakeOpenAI(turns: Turn[] = [], options: FakeOpenAIOptions = {}): Promise<FakeOpenAI> {
  const script: Turn[] = [...turns];
  const requests: RecordedRequest[] = [];
  const models = options.models ?? ['m'];
  let next = 0;
  let errorRepeats = 0;
  let completionSeq = 0;

  function takeTurn(): { turn: Turn; index?: number } {
    const turn = script[next];
    if (!turn) return { turn: options.whenExhausted ?? { text: 'done' } };
    const index = next;
    if ('error' in turn) {
      errorRepeats += 1;
      if (errorRepeats >= (turn.times ?? 1)) {
        next += 1;
        errorRepeats = 0;
      }
    } else {
      next += 1;
    }
    return { turn, index };
  }

  function sendJson(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
    const body = JSON.stringify(value);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), ...headers });
    res.end(body);
  }

  function answer(res: ServerResponse, body: Record<string, unknown>, turn: Turn): void {
    if ('error' in turn) {
      const e = turn.error;
      const retry: Record<string, string> =
        turn.retryAfterMs === undefined ? {} : { 'retry-after-ms': String(turn.retryAfterMs), 'retry-after': String(Math.ceil(turn.retryAfterMs / 1000)) };
      sendJson(res, e.status, { error: { message: e.message, type: e.type ?? 'server_error', param: null, code: e.code ?? null } }, retry);
      return;
    }
    const model = typeof body.model === 'string' ? body.model : (models[0] ?? 'm');
    const id = `chatcmpl-fake${++completionSeq}`;
    const created = Math.floor(Date.now() / 1000);
    const usage = turn.usage ?? DEFAULT_USAGE;
    const text = turn.text;
    const calls = 'toolCalls' in turn ? turn.toolCalls.map((c, i) => ({ ...c, id: c.id ?? `call_${completionSeq}_${i}` })) : [];
    const finishReason = calls.length ? 'tool_calls' : 'stop';

    if (body.stream !== true) {
      sendJson(res, 200, {
        id,
        object: 'chat.completion',
        created,
        model,
        choices: [
          {
            index: 0,
            message: {
              role: 'assistant',
              content: text ?? null,
              refusal: null,
              ...(calls.length
                ? { tool_calls: calls.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: argumentsText(c.arguments) } })) }
                : {}),
            },
            logprobs: null,
            finish_reason: finishReason,
          },
        ],
        usage: usageObject(usage),
      });
      return;
    }

    const includeUsage = (body.stream_options as { include_usage?: unknown } | undefined)?.include_usage === true;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
      res.write(`data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created, model, system_fingerprint: 'fp_fake', choices, ...(includeUsage ? { usage: null } : {}), ...extra })}\n\n`);
    const delta = (d: Record<string, unknown>, finish: string | null = null) => chunk([{ index: 0, delta: d, logprobs: null, finish_reason: finish }]);

    delta({ role: 'assistant', content: '', refusal: null });
    if (text) for (const piece of fragments(text)) delta({ content: piece });
    calls.forEach((call, index) => {
      delta({ tool_calls: [{ index, id: call.id, type: 'function', function: { name: call.name, arguments: '' } }] });
      for (const piece of fragments(argumentsText(call.arguments))) delta({ tool_calls: [{ index, function: { arguments: piece } }] });
    });
    delta({}, finishReason);
    if (includeUsage) chunk([], { usage: usageObject(usage) });
    res.write('data: [DONE]\n\n');
    res.end();
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const raw = req.method === 'POST' ? await readBody(req) : '';
    let body: Record<string, unknown> | undefined;
    try {
      body = raw ? (JSON.parse(raw) as Record<string, unknown>) : undefined;
    } catch {
      body = undefined;
    }
    const record: RecordedRequest = { method: req.method ?? 'GET', path, at: Date.now(), headers: req.headers, body, side: false };
    requests.push(record);

    if (req.method === 'GET' && /^\/(v1\/)?models\/?$/.test(path)) {
      sendJson(res, 200, { object: 'list', data: models.map((id) => ({ id, object: 'model', created: 0, owned_by: 'fake' })) });
      return;
    }
    if (req.method === 'POST' && /^\/(v1\/)?chat\/completions\/?$/.test(path)) {
      if (!body) {
        sendJson(res, 400, { error: { message: 'We could not parse the JSON body of your request.', type: 'invalid_request_error', param: null, code: null } });
        return;
      }
      if (isSideCall(body)) {
        record.side = true;
        answer(res, body, { text: options.sideText ?? 'Fake session', usage: { prompt: 1, completion: 1 } });
        return;
      }
      const { turn, index } = takeTurn();
      record.turn = index;
      answer(res, body, turn);
      return;
    }
    sendJson(res, 404, { error: { message: `Unknown request URL: ${req.method} ${path}`, type: 'invalid_request_error', param: null, code: 'unknown_url' } });
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) sendJson(res, 500, { error: { message: String(err), type: 'server_error', param: null, code: null } });
      else res.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    baseURL: `http://127.0.0.1:${port}/v1`,
    requests,
    chatRequests: () => requests.filter((r) => r.path.endsWith('/chat/completions') && !r.side),
    remaining: () => script.length - next,
    script: (...more) => void script.push(...more),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
