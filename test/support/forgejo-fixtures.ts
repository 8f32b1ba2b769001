// Webhook deliveries shaped like Forgejo's own (modules/structs: IssuePayload, PullRequestPayload,
// CommitStatusPayload; services/webhook/shared: the X-Forgejo-*, X-Gitea-*, X-Gogs-* and X-Hub-*
// headers). Bodies are indented JSON, as Forgejo's json.MarshalIndent writes them, and signed
// over those exact bytes.
import { createHmac, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';

export function user(login: string, id = Math.floor(Math.random() * 10_000)) {
  return {
    id,
    login,
    login_name: '',
    source_id: 0,
    full_name: '',
    email: `${login}@noreply.forgejo.example`,
    avatar_url: `https://forgejo.example/avatars/${id}`,
    html_url: `https://forgejo.example/${login}`,
    language: '',
    is_admin: false,
    last_login: '0001-01-01T00:00:00Z',
    created: '2026-01-02T10:00:00Z',
    restricted: false,
    active: false,
    prohibit_login: false,
    location: '',
    pronouns: '',
    website: '',
    description: '',
    visibility: 'public',
    followers_count: 0,
    following_count: 0,
    starred_repos_count: 0,
    username: login,
  };
}

export function repository(fullName: string) {
  const [owner, name] = fullName.split('/') as [string, string];
  return {
    id: 17,
    owner: user(owner, 3),
    name,
    full_name: fullName,
    description: '',
    empty: false,
    private: false,
    fork: false,
    template: false,
    parent: null,
    mirror: false,
    size: 112,
    language: 'TypeScript',
    languages_url: `https://forgejo.example/api/v1/repos/${fullName}/languages`,
    html_url: `https://forgejo.example/${fullName}`,
    url: `https://forgejo.example/api/v1/repos/${fullName}`,
    link: '',
    ssh_url: `git@forgejo.example:${fullName}.git`,
    clone_url: `https://forgejo.example/${fullName}.git`,
    original_url: '',
    website: '',
    stars_count: 0,
    forks_count: 0,
    watchers_count: 1,
    open_issues_count: 3,
    open_pr_counter: 1,
    release_counter: 0,
    default_branch: 'main',
    archived: false,
    created_at: '2026-01-02T10:00:00Z',
    updated_at: '2026-03-04T10:00:00Z',
    archived_at: '1970-01-01T00:00:00Z',
    permissions: { admin: false, push: false, pull: true },
    has_issues: true,
    has_wiki: true,
    has_pull_requests: true,
    has_projects: true,
    has_releases: true,
    has_packages: false,
    has_actions: true,
    ignore_whitespace_conflicts: false,
    allow_merge_commits: true,
    allow_rebase: true,
    allow_rebase_explicit: true,
    allow_squash_merge: true,
    allow_fast_forward_only_merge: true,
    allow_rebase_update: true,
    default_delete_branch_after_merge: false,
    default_merge_style: 'merge',
    default_allow_maintainer_edit: false,
    avatar_url: '',
    internal: false,
    mirror_interval: '',
    object_format_name: 'sha1',
    mirror_updated: '0001-01-01T00:00:00Z',
    repo_transfer: null,
    topics: null,
  };
}

export function issue(fullName: string, number: number, opts: { title?: string; body?: string; assignees?: string[]; author?: string; state?: 'open' | 'closed' } = {}) {
  const assignees = (opts.assignees ?? []).map((l, i) => user(l, 100 + i));
  return {
    id: 1000 + number,
    url: `https://forgejo.example/api/v1/repos/${fullName}/issues/${number}`,
    html_url: `https://forgejo.example/${fullName}/issues/${number}`,
    number,
    user: user(opts.author ?? 'alice', 7),
    original_author: '',
    original_author_id: 0,
    title: opts.title ?? `Issue ${number}`,
    body: opts.body ?? 'Please do the thing.',
    ref: '',
    assets: [],
    labels: [],
    milestone: null,
    assignee: assignees[0] ?? null,
    assignees: assignees.length ? assignees : null,
    state: opts.state ?? 'open',
    is_locked: false,
    comments: 0,
    created_at: '2026-03-04T10:00:00Z',
    updated_at: '2026-03-04T10:05:00Z',
    closed_at: null,
    due_date: null,
    pull_request: null,
    repository: { id: 17, name: fullName.split('/')[1], owner: fullName.split('/')[0], full_name: fullName },
    pin_order: 0,
  };
}

export function pullRequest(fullName: string, number: number, opts: { title?: string; body?: string; author?: string; head?: string; sha?: string; state?: 'open' | 'closed'; merged?: boolean } = {}) {
  const repo = repository(fullName);
  const sha = opts.sha ?? 'a'.repeat(40);
  return {
    id: 2000 + number,
    url: `https://forgejo.example/${fullName}/pulls/${number}`,
    number,
    user: user(opts.author ?? 'drover-dev', 8),
    title: opts.title ?? `PR ${number}`,
    body: opts.body ?? 'Closes #1',
    labels: [],
    milestone: null,
    assignee: null,
    assignees: null,
    requested_reviewers: null,
    requested_reviewers_teams: null,
    state: opts.state ?? 'open',
    draft: false,
    is_locked: false,
    comments: 0,
    review_comments: 0,
    additions: 10,
    deletions: 2,
    changed_files: 1,
    html_url: `https://forgejo.example/${fullName}/pulls/${number}`,
    diff_url: `https://forgejo.example/${fullName}/pulls/${number}.diff`,
    patch_url: `https://forgejo.example/${fullName}/pulls/${number}.patch`,
    mergeable: true,
    merged: opts.merged ?? false,
    merged_at: null,
    merge_commit_sha: null,
    merged_by: null,
    allow_maintainer_edit: false,
    base: { label: 'main', ref: 'main', sha: 'b'.repeat(40), repo_id: 17, repo },
    head: { label: opts.head ?? 'feature', ref: opts.head ?? 'feature', sha, repo_id: 17, repo },
    merge_base: 'c'.repeat(40),
    due_date: null,
    created_at: '2026-03-04T11:00:00Z',
    updated_at: '2026-03-04T11:05:00Z',
    closed_at: null,
    pin_order: 0,
  };
}

/** issues / issue_assign: an issue assigned (Forgejo lists the assignees, not which one was added). */
export function issueAssigned(fullName: string, number: number, assignees: string[], opts: Parameters<typeof issue>[2] = {}) {
  return {
    event: 'issues',
    eventType: 'issue_assign',
    payload: { action: 'assigned', number, issue: issue(fullName, number, { ...opts, assignees }), repository: repository(fullName), sender: user('alice', 7), commit_id: '' },
  };
}

/** pull_request / pull_request_review_request: a review requested from `reviewer`. */
export function reviewRequested(fullName: string, number: number, reviewer: string, opts: Parameters<typeof pullRequest>[2] = {}) {
  return {
    event: 'pull_request',
    eventType: 'pull_request_review_request',
    payload: {
      action: 'review_requested',
      number,
      pull_request: pullRequest(fullName, number, opts),
      requested_reviewer: user(reviewer, 9),
      repository: repository(fullName),
      sender: user('alice', 7),
      commit_id: '',
      review: null,
    },
  };
}

/** pull_request_approved|rejected / pull_request_review_approved|rejected: a submitted review. */
export function reviewed(fullName: string, number: number, verdict: 'approved' | 'rejected', reviewer: string, content: string, opts: Parameters<typeof pullRequest>[2] = {}) {
  return {
    event: `pull_request_${verdict}`,
    eventType: `pull_request_review_${verdict}`,
    payload: {
      action: 'reviewed',
      number,
      pull_request: pullRequest(fullName, number, opts),
      requested_reviewer: null,
      repository: repository(fullName),
      sender: user(reviewer, 9),
      commit_id: '',
      review: { type: `pull_request_review_${verdict}`, content },
    },
  };
}

/** status: a commit status (Gitea's CommitStatusPayload). */
export function commitStatus(fullName: string, sha: string, state: 'pending' | 'success' | 'failure' | 'error', context = 'ci/test') {
  return {
    event: 'status',
    eventType: 'status',
    payload: {
      commit: { id: sha, message: 'fix things\n', url: `https://forgejo.example/${fullName}/commit/${sha}`, author: null, committer: null, verification: null, timestamp: '2026-03-04T11:00:00Z', added: null, removed: null, modified: null },
      context,
      created_at: '2026-03-04T11:10:00Z',
      description: state === 'failure' ? 'tests failed: 3 of 120' : 'ok',
      id: 55,
      repository: repository(fullName),
      sender: user('ci-bot', 11),
      sha,
      state,
      target_url: `https://ci.example/${fullName}/runs/9`,
      updated_at: '2026-03-04T11:10:00Z',
    },
  };
}

export interface Delivery {
  event: string;
  eventType: string;
  payload: unknown;
}

/** The exact request Forgejo makes: indented JSON body and its headers, signed with `secret`. */
export function forgejoRequest(delivery: Delivery, secret: string | undefined, opts: { id?: string; signature?: string | null } = {}) {
  const body = JSON.stringify(delivery.payload, null, 2);
  const id = opts.id ?? randomUUID();
  const sig256 = secret ? createHmac('sha256', secret).update(body).digest('hex') : '';
  const sig1 = secret ? createHmac('sha1', secret).update(body).digest('hex') : '';
  const signature = opts.signature === null ? undefined : (opts.signature ?? sig256);
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'user-agent': 'Go-http-client/1.1',
    'x-forgejo-delivery': id,
    'x-forgejo-event': delivery.event,
    'x-forgejo-event-type': delivery.eventType,
    'x-gitea-delivery': id,
    'x-gitea-event': delivery.event,
    'x-gitea-event-type': delivery.eventType,
    'x-gogs-delivery': id,
    'x-gogs-event': delivery.event,
    'x-gogs-event-type': delivery.eventType,
    'x-hub-signature': `sha1=${sig1}`,
    'x-hub-signature-256': `sha256=${sig256}`,
    'x-github-delivery': id,
    'x-github-event': delivery.event,
    'x-github-event-type': delivery.eventType,
  };
  if (signature !== undefined) {
    headers['x-forgejo-signature'] = signature;
    headers['x-gitea-signature'] = signature;
    headers['x-gogs-signature'] = signature;
  }
  return { body, headers, id };
}

// ---- answers captured from a real Gitea 1.27.3 (test/fixtures/gitea, scripts/gitea.sh) ----------

const GITEA_FIXTURES = new URL('../fixtures/gitea/', import.meta.url);

/** A captured API answer's body: `api-<name>.json`. */
export function capturedAnswer<T = unknown>(name: string): T {
  return (JSON.parse(readFileSync(new URL(`api-${name}.json`, GITEA_FIXTURES), 'utf8')) as { body: T }).body;
}

/** An inline review comment exactly as the real server answers it (position, no line), with `fields` changed. */
export function capturedReviewComment(fields: { body: string; path: string; position?: number; original_position?: number }) {
  const [comment] = capturedAnswer<Array<Record<string, unknown>>>('pull-review-comments');
  return { ...comment!, ...fields };
}

/** A delivery captured from the real server (`<name>.json`): its event headers and its body. */
export function capturedDelivery(name: string): Delivery {
  const captured = JSON.parse(readFileSync(new URL(`${name}.json`, GITEA_FIXTURES), 'utf8')) as { headers: Record<string, string>; body: unknown };
  return { event: captured.headers['X-Gitea-Event']!, eventType: captured.headers['X-Gitea-Event-Type']!, payload: captured.body };
}
