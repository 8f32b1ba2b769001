// A local HTTP server standing in for Forgejo's API (comments, pull requests, reviews) and for
// callback receivers. Records every request; can be switched down (503) or gone (404). Its answers
// are answers captured from a real Gitea 1.27.3 (test/fixtures/gitea, api-*.json) with the test's
// values put in (repository, numbers, ids, texts, users, branches, shas); every other field is as
// the real server sent it.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { capturedAnswer, renameUser, renumber, retarget, type GiteaPullRequest, type GiteaUser } from './forgejo-fixtures';

export interface RecordedRequest {
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  body: unknown;
  at: number;
}

/** What a test says about a pull request; the fake answers it as the real server would list it. */
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

/** What a test says about a review; the fake answers it as the real server would list it. */
export interface FakeReview {
  id: number;
  state: string;
  body: string;
  user: { login: string };
  submitted_at: string;
}

/** A comment as the real server answers it (api-issue-comment-created.json). */
export interface FakeComment {
  id: number;
  body: string;
  created_at: string;
  updated_at: string;
  [field: string]: unknown;
}

type Json = Record<string, unknown>;

/** A time as the server writes it: whole seconds, UTC. */
const serverTime = (at: Date): string => at.toISOString().replace(/\.\d{3}Z$/, 'Z');

export class FakeForgejo {
  readonly requests: RecordedRequest[] = [];
  /** `up` answers; `down` answers 503 (an outage); `gone` answers 404 (a deleted issue). */
  mode: 'up' | 'down' | 'gone' = 'up';
  /** Comments posted, by `owner/name#n`, as the server answered them. */
  readonly comments = new Map<string, FakeComment[]>();
  readonly pulls = new Map<string, FakePull[]>();
  readonly reviews = new Map<string, FakeReview[]>();
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

  commentsOn(repo: string, number: number): FakeComment[] {
    return this.comments.get(`${repo}#${number}`) ?? [];
  }

  callbacks(path: string): RecordedRequest[] {
    return this.requests.filter((r) => r.method === 'POST' && r.path === path);
  }

  /** The comment the server answers a POST with: the captured one, on this issue or pull request. */
  private commentAnswer(repo: string, number: number, text: string): FakeComment {
    const isPull = (this.pulls.get(repo) ?? []).some((p) => p.number === number);
    const comment = retarget(capturedAnswer<FakeComment>(isPull ? 'pull-comment-created' : 'issue-comment-created'), repo, this.url);
    const id = this.nextId++;
    const at = serverTime(new Date());
    comment.id = id;
    comment.body = text;
    comment.created_at = at;
    comment.updated_at = at;
    for (const field of ['html_url', 'issue_url', 'pull_request_url']) {
      const value = comment[field];
      if (typeof value === 'string' && value) comment[field] = value.replace(/\/(issues|pulls)\/\d+/, `/$1/${number}`).replace(/#issuecomment-\d+$/, `#issuecomment-${id}`);
    }
    return comment;
  }

  /** A pull request as the server lists it (api-pulls-open.json), with the test's values. */
  private pullAnswer(repo: string, fake: FakePull): GiteaPullRequest {
    const pull = retarget(capturedAnswer<GiteaPullRequest[]>('pulls-open')[0]!, repo, this.url);
    const was = pull.number;
    pull.number = fake.number;
    for (const field of ['url', 'html_url', 'diff_url', 'patch_url'] as const) pull[field] = renumber(pull[field], 'pulls', was, fake.number);
    if (fake.html_url !== undefined) pull.html_url = fake.html_url;
    pull.title = fake.title;
    if (fake.body !== undefined) pull.body = fake.body;
    pull.user = renameUser(pull.user, fake.user.login);
    pull.state = fake.state;
    if (fake.state === 'closed') pull.closed_at = pull.updated_at;
    pull.head.label = fake.head.ref;
    pull.head.ref = fake.head.ref;
    pull.head.sha = fake.head.sha;
    pull.base.label = fake.base.ref;
    pull.base.ref = fake.base.ref;
    return pull;
  }

  /**
   * A review as the server lists it: a pending request (`REQUEST_REVIEW`: no body, no commit, no
   * link), a change request, or an approval, each from the captured list, with the test's values.
   */
  private reviewAnswer(repo: string, number: number, fake: FakeReview): Json {
    const [requested, changes] = capturedAnswer<Json[]>('pull-reviews');
    const approved = capturedAnswer<Json[]>('pull-reviews-after-approval').find((r) => r.state === 'APPROVED');
    const template = fake.state === 'REQUEST_REVIEW' ? requested : fake.state === 'APPROVED' ? approved : changes;
    const review = retarget(template!, repo, this.url);
    review.id = fake.id;
    review.user = renameUser(review.user as GiteaUser, fake.user.login);
    review.state = fake.state;
    review.body = fake.body;
    review.submitted_at = fake.submitted_at;
    review.updated_at = fake.submitted_at;
    if (fake.state !== 'REQUEST_REVIEW') review.comments_count = this.reviewComments.get(fake.id)?.length ?? 0;
    if (typeof review.html_url === 'string' && review.html_url) {
      review.html_url = review.html_url.replace(/\/pulls\/\d+#pullrequestreview-\d+$/, `/pulls/${number}#pullrequestreview-${fake.id}`);
    }
    if (typeof review.pull_request_url === 'string') review.pull_request_url = review.pull_request_url.replace(/\/pulls\/\d+$/, `/pulls/${number}`);
    return review;
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
    // A 404 is shaped like the server's own (api-commit-pull-by-head-sha.json).
    const notFound = (message: string) => send(404, { message, url: `${this.url}/api/swagger` });
    if (url.pathname.startsWith('/callback/')) return send(this.callbackStatus.get(url.pathname) ?? 200, { ok: true });
    if (this.mode === 'down') return send(503, { message: 'maintenance' });
    if (this.mode === 'gone') return notFound('issue does not exist');
    if (req.headers.authorization !== 'token forgejo-test-token') return send(401, { message: 'unauthorized' });

    let m = /^\/api\/v1\/repos\/([^/]+)\/([^/]+)\/issues\/(\d+)\/comments$/.exec(url.pathname);
    if (m) {
      const repo = `${decodeURIComponent(m[1]!)}/${decodeURIComponent(m[2]!)}`;
      const key = `${repo}#${m[3]}`;
      const list = this.comments.get(key) ?? [];
      if (req.method === 'POST') {
        const comment = this.commentAnswer(repo, Number(m[3]), String((body as { body?: unknown })?.body ?? ''));
        list.push(comment);
        this.comments.set(key, list);
        return send(201, comment);
      }
      // `since`: only comments updated at or after it (the server compares whole seconds).
      const since = url.searchParams.get('since');
      const from = since && !Number.isNaN(Date.parse(since)) ? Math.floor(Date.parse(since) / 1000) : undefined;
      return send(200, from === undefined ? list : list.filter((c) => Date.parse(c.updated_at) / 1000 >= from));
    }
    m = /^\/api\/v1\/repos\/([^/]+)\/([^/]+)\/pulls$/.exec(url.pathname);
    if (m && req.method === 'GET') {
      const repo = `${decodeURIComponent(m[1]!)}/${decodeURIComponent(m[2]!)}`;
      const page = Number(url.searchParams.get('page') ?? 1);
      const limit = Number(url.searchParams.get('limit') ?? 30);
      const open = (this.pulls.get(repo) ?? []).filter((p) => url.searchParams.get('state') !== 'open' || p.state === 'open');
      return send(200, open.slice((page - 1) * limit, page * limit).map((p) => this.pullAnswer(repo, p)));
    }
    m = /^\/api\/v1\/repos\/([^/]+)\/([^/]+)\/pulls\/(\d+)\/reviews$/.exec(url.pathname);
    if (m && req.method === 'GET') {
      const repo = `${decodeURIComponent(m[1]!)}/${decodeURIComponent(m[2]!)}`;
      return send(200, (this.reviews.get(`${repo}#${m[3]}`) ?? []).map((r) => this.reviewAnswer(repo, Number(m![3]), r)));
    }
    m = /^\/api\/v1\/repos\/([^/]+)\/([^/]+)\/issues\/(\d+)\/timeline$/.exec(url.pathname);
    if (m && req.method === 'GET') return send(200, this.timelines.get(`${decodeURIComponent(m[1]!)}/${decodeURIComponent(m[2]!)}#${m[3]}`) ?? []);
    m = /^\/api\/v1\/repos\/[^/]+\/[^/]+\/pulls\/\d+\/reviews\/(\d+)\/comments$/.exec(url.pathname);
    if (m && req.method === 'GET') return send(200, this.reviewComments.get(Number(m[1])) ?? []);
    return notFound('no such route in the fake');
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
