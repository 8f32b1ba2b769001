// The few Forgejo (and Gitea) API calls Drover makes: comments on issues and pull requests, and
// look-ups that webhook payloads leave out (the pull request whose head a commit status is on,
// a review's inline comments). Errors say whether a retry can help.

/** A Forgejo API call failed. `permanent` failures (4xx other than 408/429) will fail again. */
export class ForgejoError extends Error {
  override readonly name = 'ForgejoError';
  constructor(
    message: string,
    readonly status: number | undefined,
    readonly permanent: boolean,
  ) {
    super(message);
  }
}

/** 4xx answers other than 408 (timeout) and 429 (rate limit) will not change on retry. */
export function isPermanentStatus(status: number): boolean {
  return status >= 400 && status < 500 && status !== 408 && status !== 429;
}

export interface ForgejoUser {
  id?: number;
  login: string;
}

export interface ForgejoPullRequest {
  number: number;
  title: string;
  body?: string;
  html_url?: string;
  state?: string;
  user?: ForgejoUser;
  head?: { ref?: string; sha?: string };
  base?: { ref?: string };
}

export interface ForgejoComment {
  id: number;
  body: string;
}

export interface ForgejoReview {
  id: number;
  state?: string;
  body?: string;
  user?: ForgejoUser;
  submitted_at?: string;
}

/**
 * An inline review comment as Forgejo and Gitea answer it: `position` is the line in the new
 * file, `original_position` the line in the old one (a comment on a removed line); there is no
 * `line` (captured from Gitea 1.27.3: test/fixtures/gitea/api-pull-review-comments.json).
 */
export interface ForgejoReviewComment {
  body: string;
  path?: string;
  position?: number;
  original_position?: number;
  /** GitHub's name for it; kept for servers that send it. */
  line?: number;
}

/** Where an inline comment points: `src/a.ts:12`, `src/a.ts:7 (old)` for a removed line, or the path. */
export function commentLocation(comment: ForgejoReviewComment): string | undefined {
  if (!comment.path) return undefined;
  const positive = (n: unknown): n is number => typeof n === 'number' && Number.isInteger(n) && n > 0;
  if (positive(comment.line)) return `${comment.path}:${comment.line}`;
  if (positive(comment.position)) return `${comment.path}:${comment.position}`;
  if (positive(comment.original_position)) return `${comment.path}:${comment.original_position} (old)`;
  return comment.path;
}

/** An entry of an issue's timeline; `assignees` entries say who was assigned (or unassigned) when. */
export interface ForgejoTimelineEntry {
  id: number;
  type: string;
  created_at?: string;
  assignee?: ForgejoUser | null;
  removed_assignee?: boolean;
}

export interface ForgejoApiOptions {
  url: string;
  token?: string;
  timeoutMs: number;
}

const REPO = /^[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+$/;

export class ForgejoApi {
  private readonly base: string;

  constructor(private readonly options: ForgejoApiOptions) {
    this.base = options.url.replace(/\/+$/, '');
  }

  private repoPath(repo: string): string {
    if (!REPO.test(repo)) throw new ForgejoError(`invalid repository ${JSON.stringify(repo)}`, undefined, true);
    const [owner, name] = repo.split('/') as [string, string];
    return `/api/v1/repos/${encodeURIComponent(owner)}/${encodeURIComponent(name)}`;
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const url = `${this.base}${path}`;
    let response: Response;
    try {
      response = await fetch(url, {
        method,
        headers: {
          accept: 'application/json',
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          ...(this.options.token ? { authorization: `token ${this.options.token}` } : {}),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.options.timeoutMs),
      });
    } catch (error) {
      throw new ForgejoError(`Forgejo ${method} ${path}: ${(error as Error).message}`, undefined, false);
    }
    const text = await response.text().catch(() => '');
    if (!response.ok) {
      throw new ForgejoError(
        `Forgejo ${method} ${path}: HTTP ${response.status} ${text.slice(0, 200)}`,
        response.status,
        isPermanentStatus(response.status),
      );
    }
    if (!text) return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ForgejoError(`Forgejo ${method} ${path}: answer is not JSON`, response.status, false);
    }
  }

  createComment(repo: string, number: number, body: string): Promise<ForgejoComment> {
    return this.request('POST', `${this.repoPath(repo)}/issues/${number}/comments`, { body });
  }

  /** Comments on an issue or pull request, optionally only those updated since `since`. */
  async listComments(repo: string, number: number, since?: string): Promise<ForgejoComment[]> {
    const query = since ? `?since=${encodeURIComponent(since)}` : '';
    return (await this.request<ForgejoComment[] | undefined>('GET', `${this.repoPath(repo)}/issues/${number}/comments${query}`)) ?? [];
  }

  /** An issue's timeline since `since` (ISO), oldest first. */
  async issueTimeline(repo: string, number: number, since?: string): Promise<ForgejoTimelineEntry[]> {
    const query = `?limit=100${since ? `&since=${encodeURIComponent(since)}` : ''}`;
    return (await this.request<ForgejoTimelineEntry[] | undefined>('GET', `${this.repoPath(repo)}/issues/${number}/timeline${query}`)) ?? [];
  }

  /** The open pull request whose head is `sha`, if any (pages through open pull requests). */
  async findOpenPullByHeadSha(repo: string, sha: string, maxPages = 20): Promise<ForgejoPullRequest | undefined> {
    for (let page = 1; page <= maxPages; page++) {
      const pulls = (await this.request<ForgejoPullRequest[] | undefined>('GET', `${this.repoPath(repo)}/pulls?state=open&limit=50&page=${page}`)) ?? [];
      const match = pulls.find((pull) => pull.head?.sha === sha);
      if (match) return match;
      if (pulls.length < 50) return undefined;
    }
    return undefined;
  }

  async listReviews(repo: string, number: number): Promise<ForgejoReview[]> {
    return (await this.request<ForgejoReview[] | undefined>('GET', `${this.repoPath(repo)}/pulls/${number}/reviews`)) ?? [];
  }

  async listReviewComments(repo: string, number: number, reviewId: number): Promise<ForgejoReviewComment[]> {
    return (await this.request<ForgejoReviewComment[] | undefined>('GET', `${this.repoPath(repo)}/pulls/${number}/reviews/${reviewId}/comments`)) ?? [];
  }
}
