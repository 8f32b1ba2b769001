// Forgejo (and Gitea) webhook deliveries → tasks. Pure mapping plus two optional API look-ups;
// the HTTP plugin does the signature check and the start. Payload text only ever becomes data
// (a title, a prompt): it is never used to build a command.
import type { CheckoutRefs } from '../workspace/plan';
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { TaskInput, TaskKind } from '../model';
import { taskId, TASK_ID_PATTERN } from '../names';
import { renderPrompt, type PromptValues } from '../prompts';
import { commentLocation, type ForgejoApi } from './api';

/** The delivery headers Forgejo and Gitea send (Forgejo sends both families, Gitea its own). */
export interface DeliveryHeaders {
  /** `issues`, `pull_request`, `pull_request_approved`, `status`… */
  event?: string;
  /** The finer type: `issue_assign`, `pull_request_review_request`, `pull_request_review_rejected`… */
  eventType?: string;
  delivery?: string;
  /** Hex HMAC-SHA256 of the raw body. */
  signature?: string;
}

type HeaderBag = Record<string, string | string[] | undefined>;

function header(headers: HeaderBag, ...names: string[]): string | undefined {
  for (const name of names) {
    const value = headers[name.toLowerCase()];
    const first = Array.isArray(value) ? value[0] : value;
    if (typeof first === 'string' && first.length > 0) return first.trim();
  }
  return undefined;
}

export function readDeliveryHeaders(headers: HeaderBag): DeliveryHeaders {
  return {
    event: header(headers, 'x-forgejo-event', 'x-gitea-event', 'x-gogs-event'),
    eventType: header(headers, 'x-forgejo-event-type', 'x-gitea-event-type', 'x-gogs-event-type'),
    delivery: header(headers, 'x-forgejo-delivery', 'x-gitea-delivery', 'x-gogs-delivery'),
    signature: header(headers, 'x-forgejo-signature', 'x-gitea-signature', 'x-gogs-signature'),
  };
}

/** Hex HMAC-SHA256 of `body` with `secret`, as Forgejo computes it. */
export function signBody(secret: string, body: Buffer | string): string {
  return createHmac('sha256', secret).update(body).digest('hex');
}

/** Constant-time check of a delivery's signature. */
export function verifySignature(secret: string, body: Buffer, signature: string | undefined): boolean {
  if (!signature) return false;
  const given = signature.trim().toLowerCase().replace(/^sha256=/, '');
  if (!/^[0-9a-f]{64}$/.test(given)) return false;
  const expected = Buffer.from(signBody(secret, body), 'hex');
  return timingSafeEqual(expected, Buffer.from(given, 'hex'));
}

export interface MappingConfig {
  types: string[];
  logins: Record<string, string>;
  prompts: Record<string, string>;
  webhook: { mergeType: string };
}

export type TaskRequest = Pick<TaskInput, 'agentType' | 'kind' | 'repo' | 'number' | 'title' | 'prompt' | 'url' | 'sessionKey'>;

export type Decision =
  | { kind: 'task'; taskId: string; input: TaskRequest; event: string; refs: CheckoutRefs }
  | { kind: 'ignore'; reason: string; event: string }
  | { kind: 'unknown_type'; login: string; role: string; event: string }
  | { kind: 'bad_payload'; reason: string; event: string };

// ---- safe reading of untrusted JSON ----------------------------------------------------------

type Json = Record<string, unknown>;
const obj = (value: unknown): Json | undefined => (value && typeof value === 'object' && !Array.isArray(value) ? (value as Json) : undefined);
const str = (value: unknown, max = 200_000): string | undefined => (typeof value === 'string' ? value.slice(0, max) : undefined);
const login = (user: unknown): string | undefined => {
  const name = str(obj(user)?.login, 200) ?? str(obj(user)?.username, 200);
  return name && /^[A-Za-z0-9_.-]{1,100}$/.test(name) ? name : undefined;
};
const posInt = (value: unknown): number | undefined =>
  typeof value === 'number' && Number.isInteger(value) && value > 0 && value <= 2_147_483_647 ? value : undefined;

const REPO = /^[A-Za-z0-9_.-]{1,100}\/[A-Za-z0-9_.-]{1,100}$/;
const SHA = /^[0-9a-f]{7,64}$/;
const TITLE_MAX = 500;

/** The agent type a Forgejo login stands for, or undefined when it is none. */
export function typeOfLogin(config: MappingConfig, name: string): string | undefined {
  // Own keys only: a Forgejo user may well be called `constructor` or `__proto__`.
  const mapped = Object.hasOwn(config.logins, name)
    ? config.logins[name]
    : Object.entries(config.logins).find(([l]) => l.toLowerCase() === name.toLowerCase())?.[1];
  if (typeof mapped === 'string' && mapped) return mapped;
  const lower = name.toLowerCase();
  return config.types.includes(lower) ? lower : undefined;
}

/** Which mapped event a delivery is, from its headers (the finer event type first). */
export function classify(headers: DeliveryHeaders): string {
  const type = headers.eventType?.toLowerCase();
  const event = headers.event?.toLowerCase();
  if (type === 'issue_assign' || (event === 'issues' && (!type || type === 'issues'))) return 'issues';
  if (type === 'pull_request_review_request' || (event === 'pull_request' && (!type || type === 'pull_request'))) return 'pull_request';
  if (type === 'pull_request_review_approved' || event === 'pull_request_approved') return 'pull_request_approved';
  if (type === 'pull_request_review_rejected' || event === 'pull_request_rejected') return 'pull_request_rejected';
  if (type === 'status' || event === 'status') return 'status';
  return type ?? event ?? '';
}

interface PullFields {
  number: number;
  title: string;
  body?: string;
  url?: string;
  author?: string;
  branch?: string;
  base?: string;
  sha?: string;
  state?: string;
  merged?: boolean;
}

function pullFields(pull: Json | undefined, fallbackNumber: unknown): PullFields | undefined {
  if (!pull) return undefined;
  const number = posInt(pull.number) ?? posInt(fallbackNumber);
  if (!number) return undefined;
  return {
    number,
    title: (str(pull.title) ?? '').slice(0, TITLE_MAX),
    body: str(pull.body),
    url: str(pull.html_url, 2_000),
    author: login(pull.user),
    branch: str(obj(pull.head)?.ref, 500),
    base: str(obj(pull.base)?.ref, 500),
    sha: str(obj(pull.head)?.sha, 64),
    state: str(pull.state, 20),
    merged: pull.merged === true,
  };
}

export interface MappingDeps {
  config: MappingConfig;
  /** Needed for commit statuses (which pull request?) and, optionally, review inline comments. */
  forgejo?: ForgejoApi;
}

/** Thrown when a look-up the mapping needs could not be made (Forgejo down): answer 502, Forgejo may redeliver. */
export class LookupError extends Error {
  override readonly name = 'LookupError';
}

/** Maps one delivery to the task it makes, or the reason it makes none. */
export async function mapDelivery(headers: DeliveryHeaders, payload: unknown, deps: MappingDeps): Promise<Decision> {
  const event = classify(headers);
  const body = obj(payload);
  if (!body) return { kind: 'bad_payload', reason: 'the payload is not a JSON object', event };
  const repository = obj(body.repository);
  const repo = str(repository?.full_name, 300);
  const action = str(body.action, 50);
  const { config } = deps;

  const withRepo = (): string | Decision => {
    if (!repo || !REPO.test(repo)) return { kind: 'bad_payload', reason: 'repository.full_name is missing or invalid', event };
    return repo;
  };
  const make = (kind: TaskKind, agentType: string, number: number, title: string, url: string | undefined, values: PromptValues): Decision => {
    const id = taskId(kind, repo!, number, agentType);
    if (!TASK_ID_PATTERN.test(id)) return { kind: 'bad_payload', reason: 'repository name or number makes an invalid task id', event };
    const prompt = renderPrompt(kind, { kind, agent_type: agentType, repo, number, title, url, ...values }, config.prompts);
    // What the agent's workspace checks out (src/workspace): the PR's head and base, or the default branch.
    const refs: CheckoutRefs = kind === 'implement' ? { base: str(repository?.default_branch, 500) } : { base: str(values.base), branch: str(values.branch), sha: str(values.sha) };
    return {
      kind: 'task',
      taskId: id,
      event,
      refs,
      input: { agentType, kind, repo: repo!, number, title: title || `${kind} ${repo}#${number}`, prompt, url, sessionKey: `${repo}#${number}:${agentType}` },
    };
  };
  const typeOrUnknown = (name: string | undefined, role: string): string | Decision => {
    if (!name) return { kind: 'bad_payload', reason: `the payload does not name the ${role}`, event };
    return typeOfLogin(config, name) ?? { kind: 'unknown_type', login: name, role, event };
  };

  switch (event) {
    case 'issues': {
      if (action !== 'assigned') return { kind: 'ignore', reason: `issue action ${action ?? '(none)'} makes no task`, event };
      const checked = withRepo();
      if (typeof checked !== 'string') return checked;
      const issue = obj(body.issue);
      const number = posInt(issue?.number) ?? posInt(body.number);
      if (!issue || !number) return { kind: 'bad_payload', reason: 'issue.number is missing or invalid', event };
      if (obj(issue.pull_request)) return { kind: 'ignore', reason: 'assignments of pull requests make no task', event };
      if (str(issue.state) === 'closed') return { kind: 'ignore', reason: `issue #${number} is closed`, event };
      // The payload lists the issue's assignees after the change, not which one was just added
      // (captured from Gitea 1.27.3: `issue.assignee` stays the first one). So: the one agent
      // type among them, or, with several, the one the issue's timeline shows added last.
      const assignees = [body.assignee, issue.assignee, ...(Array.isArray(issue.assignees) ? issue.assignees : [])]
        .map(login)
        .filter((name): name is string => !!name);
      if (assignees.length === 0) return { kind: 'ignore', reason: `issue #${number} has no assignee`, event };
      const agentLogins = [...new Set(assignees.filter((name) => typeOfLogin(config, name)))];
      if (agentLogins.length === 0) return { kind: 'unknown_type', login: assignees[0]!, role: 'assignee', event };
      const agentLogin = agentLogins.length === 1 ? agentLogins[0]! : await lastAssigned(deps, repo!, number, agentLogins, str(issue.updated_at, 40));
      const agentType = typeOfLogin(config, agentLogin)!;
      const title = (str(issue.title) ?? '').slice(0, TITLE_MAX);
      const url = str(issue.html_url, 2_000);
      return make('implement', agentType, number, title, url, {
        body: str(issue.body),
        author: login(issue.user),
        sender: login(body.sender),
      });
    }

    case 'pull_request': {
      if (action !== 'review_requested') return { kind: 'ignore', reason: `pull request action ${action ?? '(none)'} makes no task`, event };
      const checked = withRepo();
      if (typeof checked !== 'string') return checked;
      const pull = pullFields(obj(body.pull_request), body.number);
      if (!pull) return { kind: 'bad_payload', reason: 'pull_request.number is missing or invalid', event };
      if (pull.state === 'closed' || pull.merged) return { kind: 'ignore', reason: `pull request #${pull.number} is closed`, event };
      const agentType = typeOrUnknown(login(body.requested_reviewer), 'requested reviewer');
      if (typeof agentType !== 'string') return agentType;
      return make('review', agentType, pull.number, pull.title, pull.url, {
        body: pull.body,
        author: pull.author,
        sender: login(body.sender),
        reviewer: login(body.requested_reviewer),
        branch: pull.branch,
        base: pull.base,
        sha: pull.sha,
      });
    }

    case 'pull_request_approved':
    case 'pull_request_rejected': {
      const approved = event === 'pull_request_approved';
      const review = obj(body.review);
      const reviewType = str(review?.type, 100);
      if (reviewType && reviewType !== (approved ? 'pull_request_review_approved' : 'pull_request_review_rejected')) {
        return { kind: 'ignore', reason: `review type ${reviewType} does not match the event`, event };
      }
      const checked = withRepo();
      if (typeof checked !== 'string') return checked;
      const pull = pullFields(obj(body.pull_request), body.number);
      if (!pull) return { kind: 'bad_payload', reason: 'pull_request.number is missing or invalid', event };
      if (pull.state === 'closed' || pull.merged) return { kind: 'ignore', reason: `pull request #${pull.number} is closed`, event };
      const reviewer = login(body.sender);
      const values: PromptValues = {
        body: pull.body,
        author: pull.author,
        sender: reviewer,
        reviewer,
        branch: pull.branch,
        base: pull.base,
        sha: pull.sha,
      };
      if (approved) {
        if (!config.types.includes(config.webhook.mergeType)) return { kind: 'unknown_type', login: config.webhook.mergeType, role: 'merger', event };
        return make('merge', config.webhook.mergeType, pull.number, pull.title, pull.url, values);
      }
      const agentType = typeOrUnknown(pull.author, 'pull request author');
      if (typeof agentType !== 'string') return agentType;
      values.reviews = await reviewText(deps, repo!, pull.number, reviewer, str(review?.content));
      return make('address_review', agentType, pull.number, pull.title, pull.url, values);
    }

    case 'status': {
      const state = str(body.state, 20);
      if (state !== 'failure' && state !== 'error') return { kind: 'ignore', reason: `commit status ${state ?? '(none)'} makes no task`, event };
      const checked = withRepo();
      if (typeof checked !== 'string') return checked;
      const sha = str(body.sha, 64) ?? str(obj(body.commit)?.id, 64);
      if (!sha || !SHA.test(sha)) return { kind: 'bad_payload', reason: 'sha is missing or invalid', event };
      if (!deps.forgejo) {
        return { kind: 'ignore', reason: `the Forgejo API is not configured (forgejo.url): cannot find the pull request of commit ${sha}`, event };
      }
      let found;
      try {
        found = await deps.forgejo.findOpenPullByHeadSha(repo!, sha);
      } catch (error) {
        throw new LookupError(`cannot look up the pull request of commit ${sha}: ${(error as Error).message}`);
      }
      const pull = pullFields(found as unknown as Json | undefined, undefined);
      if (!pull) return { kind: 'ignore', reason: `commit ${sha} is not the head of an open pull request`, event };
      const agentType = typeOrUnknown(pull.author, 'pull request author');
      if (typeof agentType !== 'string') return agentType;
      return make('fix_ci', agentType, pull.number, pull.title, pull.url, {
        body: pull.body,
        author: pull.author,
        sender: login(body.sender),
        branch: pull.branch,
        base: pull.base,
        sha,
        ci_context: str(body.context, 500),
        ci_state: state,
        ci_description: str(body.description, 2_000),
        ci_url: str(body.target_url, 2_000),
      });
    }

    default:
      return { kind: 'ignore', reason: `event ${event || '(none)'} makes no task`, event };
  }
}

/**
 * Which of several agent-type assignees was added last, from the issue's timeline (the payload
 * cannot tell). Without the Forgejo API, or when the timeline does not say, the last one listed.
 */
async function lastAssigned(deps: MappingDeps, repo: string, number: number, logins: string[], updatedAt: string | undefined): Promise<string> {
  const fallback = logins[logins.length - 1]!;
  if (!deps.forgejo) return fallback;
  // The assignment is the issue's latest change: a minute before it bounds the timeline read.
  const since = updatedAt && !Number.isNaN(Date.parse(updatedAt)) ? new Date(Date.parse(updatedAt) - 60_000).toISOString() : undefined;
  let entries;
  try {
    entries = await deps.forgejo.issueTimeline(repo, number, since);
  } catch (error) {
    throw new LookupError(`cannot read the timeline of ${repo}#${number} to tell which assignee was added: ${(error as Error).message}`);
  }
  let latest: { login: string; at: string; id: number } | undefined;
  for (const entry of entries) {
    const name = entry.type === 'assignees' && !entry.removed_assignee ? login(entry.assignee) : undefined;
    if (!name || !logins.includes(name)) continue;
    const at = entry.created_at ?? '';
    if (!latest || at > latest.at || (at === latest.at && entry.id > latest.id)) latest = { login: name, at, id: entry.id };
  }
  return latest?.login ?? fallback;
}

/** The review's text, plus its inline comments when the Forgejo API can tell them (best effort). */
async function reviewText(deps: MappingDeps, repo: string, number: number, reviewer: string | undefined, content: string | undefined): Promise<string> {
  const parts = content?.trim() ? [content.trim()] : [];
  if (deps.forgejo && reviewer) {
    try {
      const reviews = await deps.forgejo.listReviews(repo, number);
      const latest = reviews
        .filter((r) => r.user?.login === reviewer && r.state === 'REQUEST_CHANGES')
        .sort((a, b) => (a.submitted_at ?? '').localeCompare(b.submitted_at ?? ''))
        .at(-1);
      if (latest) {
        const comments = await deps.forgejo.listReviewComments(repo, number, latest.id);
        for (const comment of comments.slice(0, 200)) {
          const location = commentLocation(comment);
          const where = location ? `${location}: ` : '';
          parts.push(`- ${where}${comment.body.slice(0, 5_000)}`);
        }
      }
    } catch {
      // Inline comments are a courtesy: the review's own text is enough to start.
    }
  }
  return parts.join('\n') || '(no review text)';
}
