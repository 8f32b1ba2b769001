// A local HTTP server standing in for Forgejo's API (comments, pull requests, reviews) and for
// callback receivers. Records every request; can be switched down (503) or gone (404).
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RecordedRequest {
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  body: unknown;
  at: number;
}

export interface FakePull {
  number: number;
  title: string;
  body?: string;
  html_url?: string;
  state: 'open' | 'closed';
  user: { login: string };
  head: { ref: string; sha: string };
  base: { ref: string };
}

export class FakeForgejo {
  readonly requests: RecordedRequest[] = [];
  /** `up` answers; `down` answers 503 (an outage); `gone` answers 404 (a deleted issue). */
  mode: 'up' | 'down' | 'gone' = 'up';
  readonly comments = new Map<string, Array<{ id: number; body: string; created_at: string }>>();
  readonly pulls = new Map<string, FakePull[]>();
  readonly reviews = new Map<string, Array<{ id: number; state: string; body: string; user: { login: string }; submitted_at: string }>>();
  /** Issue timelines by `owner/name#n` (assignment entries: who was added when), as the real server answers them. */
  readonly timelines = new Map<string, Array<Record<string, unknown>>>();
  /** Inline comments per review id, as the real server answers them (see capturedReviewComment). */
  readonly reviewComments = new Map<number, Array<Record<string, unknown>>>();
  /** Callback receivers: path → status to answer (default 200). */
  readonly callbackStatus = new Map<string, number>();
  private nextId = 1;

  private constructor(
    private readonly server: Server,
    readonly url: string,
  ) {}

  static async start(): Promise<FakeForgejo> {
    const holder: { self?: FakeForgejo } = {};
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => holder.self!.handle(req, Buffer.concat(chunks).toString('utf8'), res));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    holder.self = new FakeForgejo(server, `http://127.0.0.1:${port}`);
    return holder.self;
  }

  commentsOn(repo: string, number: number): Array<{ id: number; body: string }> {
    return this.comments.get(`${repo}#${number}`) ?? [];
  }

  callbacks(path: string): RecordedRequest[] {
    return this.requests.filter((r) => r.method === 'POST' && r.path === path);
  }

  private handle(req: IncomingMessage, text: string, res: import('node:http').ServerResponse): void {
    const url = new URL(req.url ?? '/', this.url);
    let body: unknown = text;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      // keep the text
    }
    this.requests.push({ method: req.method ?? '', path: url.pathname, headers: req.headers, body, at: Date.now() });
    const send = (status: number, json?: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(json === undefined ? '' : JSON.stringify(json));
    };
    if (url.pathname.startsWith('/callback/')) return send(this.callbackStatus.get(url.pathname) ?? 200, { ok: true });
    if (this.mode === 'down') return send(503, { message: 'maintenance' });
    if (this.mode === 'gone') return send(404, { message: 'not found' });
    if (req.headers.authorization !== 'token forgejo-test-token') return send(401, { message: 'unauthorized' });

    let m = /^\/api\/v1\/repos\/([^/]+)\/([^/]+)\/issues\/(\d+)\/comments$/.exec(url.pathname);
    if (m) {
      const key = `${decodeURIComponent(m[1]!)}/${decodeURIComponent(m[2]!)}#${m[3]}`;
      const list = this.comments.get(key) ?? [];
      if (req.method === 'POST') {
        const comment = { id: this.nextId++, body: String((body as { body?: unknown })?.body ?? ''), created_at: new Date().toISOString() };
        list.push(comment);
        this.comments.set(key, list);
        return send(201, comment);
      }
      return send(200, list);
    }
    m = /^\/api\/v1\/repos\/([^/]+)\/([^/]+)\/pulls$/.exec(url.pathname);
    if (m && req.method === 'GET') {
      const repo = `${decodeURIComponent(m[1]!)}/${decodeURIComponent(m[2]!)}`;
      const page = Number(url.searchParams.get('page') ?? 1);
      const limit = Number(url.searchParams.get('limit') ?? 30);
      const open = (this.pulls.get(repo) ?? []).filter((p) => url.searchParams.get('state') !== 'open' || p.state === 'open');
      return send(200, open.slice((page - 1) * limit, page * limit));
    }
    m = /^\/api\/v1\/repos\/([^/]+)\/([^/]+)\/pulls\/(\d+)\/reviews$/.exec(url.pathname);
    if (m && req.method === 'GET') {
      return send(200, this.reviews.get(`${decodeURIComponent(m[1]!)}/${decodeURIComponent(m[2]!)}#${m[3]}`) ?? []);
    }
    m = /^\/api\/v1\/repos\/([^/]+)\/([^/]+)\/issues\/(\d+)\/timeline$/.exec(url.pathname);
    if (m && req.method === 'GET') return send(200, this.timelines.get(`${decodeURIComponent(m[1]!)}/${decodeURIComponent(m[2]!)}#${m[3]}`) ?? []);
    m = /^\/api\/v1\/repos\/[^/]+\/[^/]+\/pulls\/\d+\/reviews\/(\d+)\/comments$/.exec(url.pathname);
    if (m && req.method === 'GET') return send(200, this.reviewComments.get(Number(m[1])) ?? []);
    return send(404, { message: 'no such route in the fake' });
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
