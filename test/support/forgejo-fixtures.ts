// Webhook deliveries as a real server sends them. Every builder starts from a delivery captured
// from Gitea 1.27.3 (test/fixtures/gitea, see its README: nothing there is written by hand) and
// replaces only what the tests vary: the server's address and the repository (full_name, name,
// owner and every URL naming them), numbers, titles, bodies, users, branches, shas, the review's
// text and the status's state, context, description and link. Every other field stays exactly as
// the server sent it. Bodies are indented JSON with Go's escaping, as Gitea's and Forgejo's
// json.MarshalIndent write them, and are signed over those exact bytes.
import { createHash, createHmac, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';

const GITEA_FIXTURES = new URL('../fixtures/gitea/', import.meta.url);

/** The address of the server the builders' deliveries come from. */
export const FORGEJO_ORIGIN = 'https://forgejo.example';

// ---- the captured objects, as the real server sends them (only the fields we replace are typed) ----

export interface GiteaUser {
  id: number;
  login: string;
  full_name: string;
  email: string;
  avatar_url: string;
  html_url: string;
  created: string;
  username: string;
  [field: string]: unknown;
}

export interface GiteaRepository {
  id: number;
  owner: GiteaUser;
  name: string;
  full_name: string;
  html_url: string;
  [field: string]: unknown;
}

export interface GiteaIssue {
  number: number;
  url: string;
  html_url: string;
  user: GiteaUser;
  title: string;
  body: string;
  assignee: GiteaUser | null;
  assignees: GiteaUser[] | null;
  state: string;
  updated_at: string;
  closed_at: string | null;
  [field: string]: unknown;
}

export interface GiteaBranch {
  label: string;
  ref: string;
  sha: string;
  repo: GiteaRepository;
  [field: string]: unknown;
}

export interface GiteaPullRequest {
  number: number;
  url: string;
  html_url: string;
  diff_url: string;
  patch_url: string;
  user: GiteaUser;
  title: string;
  body: string;
  requested_reviewers: GiteaUser[] | null;
  state: string;
  merged: boolean;
  merged_at: string | null;
  merge_commit_sha: string | null;
  merged_by: GiteaUser | null;
  base: GiteaBranch;
  head: GiteaBranch;
  updated_at: string;
  closed_at: string | null;
  [field: string]: unknown;
}

interface IssuePayload {
  action: string;
  number: number;
  issue: GiteaIssue;
  repository: GiteaRepository;
  sender: GiteaUser;
  [field: string]: unknown;
}

interface PullRequestPayload {
  action: string;
  number: number;
  pull_request: GiteaPullRequest;
  requested_reviewer: GiteaUser | null;
  repository: GiteaRepository;
  sender: GiteaUser;
  review: { type: string; content: string } | null;
  [field: string]: unknown;
}

interface CommitStatusPayload {
  commit: { id: string; url: string; [field: string]: unknown };
  context: string;
  description: string;
  repository: GiteaRepository;
  sender: GiteaUser;
  sha: string;
  state: string;
  target_url: string;
  [field: string]: unknown;
}

interface CapturedFile {
  headers: Record<string, string>;
  body: unknown;
}

const files = new Map<string, CapturedFile>();

/** A captured file, parsed once; callers get their own deep copy of what they change. */
function readCaptured(file: string): CapturedFile {
  let captured = files.get(file);
  if (!captured) {
    captured = JSON.parse(readFileSync(new URL(file, GITEA_FIXTURES), 'utf8')) as CapturedFile;
    files.set(file, captured);
  }
  return captured;
}

/** A captured delivery's event headers and a deep copy of its body. */
function capturedCopy<T>(name: string): { event: string; eventType: string; body: T } {
  const { headers, body } = readCaptured(`${name}.json`);
  return { event: headers['X-Gitea-Event']!, eventType: headers['X-Gitea-Event-Type']!, body: structuredClone(body) as T };
}

/** Where the capture ran: its server's address and its repository. */
const CAPTURE = (() => {
  const { repository } = readCaptured('issue-assigned-dev.json').body as IssuePayload;
  const origin = repository.html_url.slice(0, -`/${repository.full_name}`.length);
  return { origin, host: new URL(origin).hostname, fullName: repository.full_name };
})();

/** The capture's users by login (ids and creation times are the server's own). */
const CAPTURED_USERS = (() => {
  const users = new Map<string, GiteaUser>();
  const walk = (value: unknown): void => {
    if (Array.isArray(value)) return value.forEach(walk);
    if (!value || typeof value !== 'object') return;
    const record = value as Record<string, unknown>;
    if (typeof record.login === 'string' && typeof record.id === 'number' && typeof record.created === 'string' && !users.has(record.login)) users.set(record.login, record as GiteaUser);
    Object.values(record).forEach(walk);
  };
  for (const name of ['issue-assigned-dev', 'pull-review-requested-human', 'pull-review-rejected']) walk(readCaptured(`${name}.json`).body);
  return users;
})();

const otherUserIds = new Map<string, number>();

/** A stable id for a login: the captured server's own for its users, a fresh one for anyone else. */
function userId(login: string): number {
  const known = CAPTURED_USERS.get(login)?.id;
  if (known !== undefined) return known;
  let id = otherUserIds.get(login);
  if (id === undefined) {
    id = 1000 + otherUserIds.size;
    otherUserIds.set(login, id);
  }
  return id;
}

/**
 * The captured user `template` (as the server shows that user in that place) become `login`: its
 * id, login, username, full name, e-mail (the same form: `<id>+<login>@noreply.<host>` or
 * `<login>@<domain>`), avatar (Gitea's: the MD5 of the user's e-mail; the capture's users have
 * `<login>@example.com`) and profile URL. Everything else stays as captured.
 */
export function renameUser(template: GiteaUser, login: string, id?: number): GiteaUser {
  const user = structuredClone(template);
  if (login === template.login && (id === undefined || id === template.id)) return user;
  const old = template.login;
  user.id = id ?? userId(login);
  user.login = login;
  user.username = login;
  if (template.full_name === old) user.full_name = login;
  const noreply = /^\d+\+[^@]*@(noreply\..*)$/.exec(template.email);
  user.email = noreply ? `${user.id}+${login}@${noreply[1]}` : `${login}@${template.email.split('@').pop()}`;
  user.avatar_url = template.avatar_url.replace(/[0-9a-f]{32}$/, createHash('md5').update(`${login}@example.com`.toLowerCase()).digest('hex'));
  if (template.html_url.endsWith(`/${old}`)) user.html_url = `${template.html_url.slice(0, -old.length)}${login}`;
  const known = CAPTURED_USERS.get(login);
  if (known) user.created = known.created;
  return user;
}

/**
 * A captured value as a server at `origin` hosting `fullName` sends it: the capture's address
 * (URLs, ssh URLs, no-reply e-mails) and repository (URLs, `full_name`) replaced in every string,
 * and every repository object's `name` and `owner` set to match.
 */
export function retarget<T>(value: T, fullName: string, origin = FORGEJO_ORIGIN): T {
  const host = new URL(origin).hostname;
  const [owner, name] = fullName.split('/') as [string, string];
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') return v.replaceAll(CAPTURE.origin, origin).replaceAll(CAPTURE.host, host).replaceAll(CAPTURE.fullName, fullName);
    if (Array.isArray(v)) return v.map(walk);
    if (!v || typeof v !== 'object') return v;
    const out = Object.fromEntries(Object.entries(v).map(([key, field]) => [key, walk(field)])) as Record<string, unknown>;
    if (out.full_name === fullName && 'owner' in out) {
      out.name = name;
      out.owner = typeof out.owner === 'string' ? owner : renameUser(out.owner as GiteaUser, owner);
    }
    return out;
  };
  return walk(value) as T;
}

/** `url` with its `/issues/<from>` (or `/pulls/<from>`) made `<to>`. */
export function renumber(url: string, kind: 'issues' | 'pulls', from: number, to: number): string {
  return url.replace(new RegExp(`/${kind}/${from}(?=$|[#/.?])`), `/${kind}/${to}`);
}

// ---- builders ----------------------------------------------------------------------------------

/** A user as the real server sends one (the sender of a captured delivery, renamed). */
export function user(login: string, id?: number): GiteaUser {
  const { body } = capturedCopy<IssuePayload>('issue-assigned-dev');
  return renameUser(retarget(body.sender, CAPTURE.fullName), login, id);
}

/** A repository as the real server sends it in a delivery (the captured one, renamed). */
export function repository(fullName: string): GiteaRepository {
  return retarget(capturedCopy<IssuePayload>('issue-assigned-dev').body.repository, fullName);
}

type IssueOptions = { title?: string; body?: string; assignees?: string[]; author?: string; state?: 'open' | 'closed' };

function setIssue(issue: GiteaIssue, number: number, opts: IssueOptions): GiteaIssue {
  const was = issue.number;
  issue.number = number;
  issue.url = renumber(issue.url, 'issues', was, number);
  issue.html_url = renumber(issue.html_url, 'issues', was, number);
  if (opts.title !== undefined) issue.title = opts.title;
  if (opts.body !== undefined) issue.body = opts.body;
  if (opts.author !== undefined) issue.user = renameUser(issue.user, opts.author);
  if (opts.assignees !== undefined) {
    const template = issue.assignee ?? issue.assignees?.[0] ?? issue.user;
    const assignees = opts.assignees.map((login) => renameUser(template, login));
    issue.assignee = assignees[0] ? structuredClone(assignees[0]) : null;
    // With nobody assigned the server sends null, not [] (issue-opened.json).
    issue.assignees = assignees.length > 0 ? assignees : null;
  }
  if (opts.state === 'closed') {
    issue.state = 'closed';
    issue.closed_at = issue.updated_at;
  }
  return issue;
}

/** An issue as the real server sends it in a delivery (the captured issue #1, with `opts`). */
export function issue(fullName: string, number: number, opts: IssueOptions = {}): GiteaIssue {
  return setIssue(retarget(capturedCopy<IssuePayload>('issue-assigned-dev').body.issue, fullName), number, opts);
}

type PullOptions = { title?: string; body?: string; author?: string; head?: string; sha?: string; state?: 'open' | 'closed'; merged?: boolean };

function setPull(pull: GiteaPullRequest, number: number, opts: PullOptions, sender: GiteaUser): GiteaPullRequest {
  const was = pull.number;
  pull.number = number;
  for (const field of ['url', 'html_url', 'diff_url', 'patch_url'] as const) pull[field] = renumber(pull[field], 'pulls', was, number);
  if (opts.title !== undefined) pull.title = opts.title;
  if (opts.body !== undefined) pull.body = opts.body;
  if (opts.author !== undefined) pull.user = renameUser(pull.user, opts.author);
  if (opts.head !== undefined) {
    // The pull request is from a branch of the same repository: its label is the branch name.
    pull.head.label = opts.head;
    pull.head.ref = opts.head;
  }
  if (opts.sha !== undefined) pull.head.sha = opts.sha;
  if (opts.state === 'closed' || opts.merged) {
    pull.state = 'closed';
    pull.closed_at = pull.updated_at;
  }
  if (opts.merged) {
    // No merged pull request was captured: these are the fields a merge sets, by the sender.
    pull.merged = true;
    pull.merged_at = pull.updated_at;
    pull.merged_by = structuredClone(sender);
    pull.merge_commit_sha = createHash('sha1').update(`merge ${pull.head.sha}`).digest('hex');
  }
  return pull;
}

/** A pull request as the real server sends it in a delivery (the captured PR #2, with `opts`). */
export function pullRequest(fullName: string, number: number, opts: PullOptions = {}): GiteaPullRequest {
  const { body } = capturedCopy<PullRequestPayload>('pull-review-requested');
  const retargeted = retarget(body, fullName);
  return setPull(retargeted.pull_request, number, opts, retargeted.sender);
}

/** issues / issue_assign: an issue assigned (the server lists the assignees, not which one was added). */
export function issueAssigned(fullName: string, number: number, assignees: string[], opts: IssueOptions = {}) {
  const { event, eventType, body } = capturedCopy<IssuePayload>('issue-assigned-dev');
  const payload = retarget(body, fullName);
  payload.number = number;
  setIssue(payload.issue, number, { ...opts, assignees });
  return { event, eventType, payload };
}

/** pull_request / pull_request_review_request: a review requested from `reviewer`. */
export function reviewRequested(fullName: string, number: number, reviewer: string, opts: PullOptions = {}) {
  const { event, eventType, body } = capturedCopy<PullRequestPayload>('pull-review-requested');
  const payload = retarget(body, fullName);
  payload.number = number;
  setPull(payload.pull_request, number, opts, payload.sender);
  payload.requested_reviewer = renameUser(payload.requested_reviewer!, reviewer);
  // The one review requested so far.
  payload.pull_request.requested_reviewers = [structuredClone(payload.requested_reviewer)];
  return { event, eventType, payload };
}

/**
 * pull_request_approved|rejected / pull_request_review_approved|rejected: a submitted review. As
 * the server sends it, `sender` and `requested_reviewer` are both the reviewer.
 */
export function reviewed(fullName: string, number: number, verdict: 'approved' | 'rejected', reviewer: string, content: string, opts: PullOptions = {}) {
  const { event, eventType, body } = capturedCopy<PullRequestPayload>(`pull-review-${verdict}`);
  const payload = retarget(body, fullName);
  const capturedReviewer = payload.sender.login;
  payload.number = number;
  payload.sender = renameUser(payload.sender, reviewer);
  if (payload.requested_reviewer) payload.requested_reviewer = renameUser(payload.requested_reviewer, reviewer);
  setPull(payload.pull_request, number, opts, payload.sender);
  const pending = (payload.pull_request.requested_reviewers ?? []).map((u) => (u.login === capturedReviewer ? renameUser(u, reviewer) : u));
  payload.pull_request.requested_reviewers = pending.filter((u, i) => pending.findIndex((v) => v.login === u.login) === i);
  payload.review = { ...payload.review!, content };
  return { event, eventType, payload };
}

/**
 * status: a commit status on `sha`. Its description and link are what the CI posted (the server
 * passes them on); by default the ones the tests look for.
 */
export function commitStatus(
  fullName: string,
  sha: string,
  state: 'pending' | 'success' | 'failure' | 'error',
  context = 'ci/test',
  opts: { description?: string; targetUrl?: string } = {},
) {
  const { event, eventType, body } = capturedCopy<CommitStatusPayload>('status-failure');
  const payload = retarget(body, fullName);
  const was = payload.sha;
  payload.sha = sha;
  payload.commit.id = sha;
  payload.commit.url = payload.commit.url.replace(was, sha);
  payload.state = state;
  payload.context = context;
  payload.description = opts.description ?? (state === 'failure' ? 'tests failed: 3 of 120' : 'ok');
  payload.target_url = opts.targetUrl ?? `https://ci.example/${fullName}/runs/9`;
  return { event, eventType, payload };
}

export interface Delivery {
  event: string;
  eventType: string;
  payload: unknown;
}

/** JSON as Go's encoding/json writes it (MarshalIndent, two spaces): `<`, `>`, `&`, U+2028 and U+2029 escaped. */
export function goJson(value: unknown): string {
  return JSON.stringify(value, null, 2).replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/**
 * The request Forgejo makes: the indented JSON body and its headers, signed with `secret`.
 * Forgejo sends both header families, X-Forgejo-* and X-Gitea-*; the deliveries captured from
 * Gitea 1.27.3 carry only X-Gitea-*, X-Gogs-* and X-GitHub-* (plus X-Hub-Signature*), no X-Forgejo-*.
 */
export function forgejoRequest(delivery: Delivery, secret: string | undefined, opts: { id?: string; signature?: string | null } = {}) {
  const body = goJson(delivery.payload);
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
    'x-gitea-hook-installation-target-type': 'repository',
    'x-gogs-delivery': id,
    'x-gogs-event': delivery.event,
    'x-gogs-event-type': delivery.eventType,
    'x-hub-signature': `sha1=${sig1}`,
    'x-hub-signature-256': `sha256=${sig256}`,
    'x-github-delivery': id,
    'x-github-event': delivery.event,
    'x-github-event-type': delivery.eventType,
    'x-github-hook-installation-target-type': 'repository',
  };
  if (signature !== undefined) {
    headers['x-forgejo-signature'] = signature;
    headers['x-gitea-signature'] = signature;
    headers['x-gogs-signature'] = signature;
  }
  return { body, headers, id };
}

// ---- deliveries and answers captured from a real Gitea 1.27.3, as they are ----------------------

/** A captured API answer's body: `api-<name>.json` (a deep copy). */
export function capturedAnswer<T = unknown>(name: string): T {
  return structuredClone(readCaptured(`api-${name}.json`).body) as T;
}

/** An inline review comment exactly as the real server answers it (position, no line), with `fields` changed. */
export function capturedReviewComment(fields: { body: string; path: string; position?: number; original_position?: number }) {
  const [comment] = capturedAnswer<Array<Record<string, unknown>>>('pull-review-comments');
  return { ...comment!, ...fields };
}

/** A delivery captured from the real server (`<name>.json`): its event headers and (a copy of) its body. */
export function capturedDelivery(name: string): Delivery {
  const { event, eventType, body } = capturedCopy<unknown>(name);
  return { event, eventType, payload: body };
}
