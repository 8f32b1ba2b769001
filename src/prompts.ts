// Prompt templates: what an agent is asked to do, built from the Forgejo event that made the task
// and stored with the task. Templates are plain text with `{{placeholder}}`s; nothing in them is
// evaluated, and payload text is only ever substituted into the prompt, never into a command.
import { TASK_KINDS, type TaskKind } from './model';

/** Everything a template may refer to. Values missing for an event render as an empty string. */
export const PROMPT_PLACEHOLDERS = [
  'kind',
  'agent_type',
  'repo',
  'number',
  'title',
  'body',
  'url',
  /** The or pull request's author. */
  'author',
  /** Who caused the event (assigned the issue, requested the review, approved…). */
  'sender',
  'reviewer',
  /** The review's text and, when the Forgejo API is configured, its inline comments. */
  'reviews',
  /** Pull requests: head branch, base branch and head commit. */
  'branch',
  'base',
  'sha',
  /** Commit statuses: context (CI job), state, description and link. */
  'ci_context',
  'ci_state',
  'ci_description',
  'ci_url',
] as const;
export type PromptPlaceholder = (typeof PROMPT_PLACEHOLDERS)[number];
export type PromptValues = Partial<Record<PromptPlaceholder, string | number | undefined>>;

export const DEFAULT_PROMPTS: Record<TaskKind, string> = {
  implement: [
    'Implement issue #{{number}} of {{repo}}: {{title}}',
    '',
    '{{body}}',
    '',
    'Issue: {{url}}',
    'Commit your work on the branch checked out for you ($DROVER_BRANCH): Drover pushes it if $DROVER_PUSH is auto,',
    'otherwise push it yourself. Then open a pull request that closes #{{number}}.',
  ].join('\n'),
  review: [
    'Review pull request #{{number}} of {{repo}}: {{title}}',
    '',
    '{{body}}',
    '',
    'Pull request: {{url}} (branch {{branch}} into {{base}}, head {{sha}})',
    'Submit your review on the pull request: approve it, or request changes with clear comments.',
  ].join('\n'),
  address_review: [
    'Address the review of pull request #{{number}} of {{repo}}: {{title}}',
    '',
    '{{reviewer}} requested changes:',
    '{{reviews}}',
    '',
    'Pull request: {{url}} (branch {{branch}})',
    'Commit the fixes on branch {{branch}}, checked out for you (Drover pushes it if $DROVER_PUSH is auto, otherwise push it yourself), and answer the review comments.',
  ].join('\n'),
  merge: [
    'Pull request #{{number}} of {{repo}} was approved by {{reviewer}}: {{title}}',
    '',
    'Pull request: {{url}} (branch {{branch}} into {{base}}, head {{sha}})',
    'Check that it is still mergeable and its checks pass, then merge it.',
  ].join('\n'),
  fix_ci: [
    'CI failed on pull request #{{number}} of {{repo}}: {{title}}',
    '',
    '{{ci_context}}: {{ci_state}} — {{ci_description}}',
    'Details: {{ci_url}}',
    '',
    'Pull request: {{url}} (branch {{branch}}, commit {{sha}})',
    'Find the cause, and commit a fix on branch {{branch}}, checked out for you (Drover pushes it if $DROVER_PUSH is auto, otherwise push it yourself).',
  ].join('\n'),
  custom: '{{title}}\n\n{{body}}',
};

const PLACEHOLDER = /\{\{\s*([A-Za-z_]+)\s*\}\}/g;

/** Config problems in `prompts`: unknown kinds and unknown placeholders, each naming its key. */
export function checkPromptTemplates(prompts: Record<string, string>): string[] {
  const problems: string[] = [];
  for (const [kind, template] of Object.entries(prompts)) {
    if (!(TASK_KINDS as readonly string[]).includes(kind)) {
      problems.push(`prompts.${kind}: unknown task kind (one of ${TASK_KINDS.join(', ')})`);
      continue;
    }
    for (const match of template.matchAll(PLACEHOLDER)) {
      if (!(PROMPT_PLACEHOLDERS as readonly string[]).includes(match[1]!)) {
        problems.push(`prompts.${kind}: unknown placeholder {{${match[1]}}} (known: ${PROMPT_PLACEHOLDERS.join(', ')})`);
      }
    }
  }
  return problems;
}

export const MAX_PROMPT_CHARS = 100_000;

/** Renders the template configured for `kind` (or the default) with `values`. */
export function renderPrompt(kind: TaskKind, values: PromptValues, templates: Record<string, string> = {}): string {
  const template = templates[kind] ?? DEFAULT_PROMPTS[kind];
  const out = template.replace(PLACEHOLDER, (whole, name: string) => {
    if (!(PROMPT_PLACEHOLDERS as readonly string[]).includes(name)) return whole;
    const value = values[name as PromptPlaceholder];
    return value === undefined || value === null ? '' : String(value);
  });
  return out.length > MAX_PROMPT_CHARS ? `${out.slice(0, MAX_PROMPT_CHARS)}\n…(truncated)` : out;
}
