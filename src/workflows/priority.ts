// Which pending work goes first: Temporal's task-queue priority and fairness keys, as Drover sets
// them on every pull offer and SSH attempt, and on its bookkeeping workflows. Pure: imported by
// workflow code.
import type { Priority } from '@temporalio/common';
import type { TaskInput, TaskKind } from '../model';
import { TASKS_QUEUE } from '../names';

/** Temporal's priority keys run from 1 (first) to 5 (last) with the server's default `matching.priorityLevels`. */
export const PRIORITY_RANGE = { first: 1, last: 5 } as const;

/**
 * Work that unblocks a pull request already open (its CI, its review comments) before reviews and
 * merges, before new work. 1 and 5 are left for tasks enqueued as urgent or as background.
 */
export const DEFAULT_KIND_PRIORITIES: Readonly<Record<TaskKind, number>> = {
  fix_ci: 2,
  address_review: 2,
  review: 3,
  merge: 3,
  implement: 4,
  custom: 4,
};

/**
 * Drover's own bookkeeping workflows (the task tallies, the agent and host registries, the cost
 * ledger) run on drover.tasks beside the task workflows. Their workflow tasks go first, so that a
 * backlog of thousands of new tasks' workflow tasks does not hold them up (a tally's first
 * workflow task after its continue-as-new waited up to six minutes behind 10,000). Task workflows
 * keep the default priority, 3: a task's own keys go on its offers and SSH attempts only, since on
 * its workflow they would also rank its heartbeat and result Updates, and a background task's
 * could then wait behind every busier one's until its lease lapsed.
 */
export const BOOKKEEPING_PRIORITY: Readonly<Priority> = Object.freeze({ priorityKey: PRIORITY_RANGE.first });

/** How every bookkeeping workflow is started (kept through continue-as-new). */
export const BOOKKEEPING_START = Object.freeze({ taskQueue: TASKS_QUEUE, priority: BOOKKEEPING_PRIORITY });

/** Temporal limits fairness keys to 64 bytes. */
export const MAX_FAIRNESS_KEY_BYTES = 64;

export function isPriorityKey(value: unknown): value is number {
  return Number.isInteger(value) && (value as number) >= PRIORITY_RANGE.first && (value as number) <= PRIORITY_RANGE.last;
}

/** The task's priority key: its own, else its kind's default. */
export function taskPriorityKey(input: Pick<TaskInput, 'kind' | 'priority'>): number {
  return isPriorityKey(input.priority) ? input.priority : (DEFAULT_KIND_PRIORITIES[input.kind] ?? DEFAULT_KIND_PRIORITIES.custom);
}

/**
 * The fairness key: the repository, so that one repository's backlog of a thousand tasks does not
 * starve another's single one. Repositories whose name is longer than Temporal allows keep a
 * readable prefix and a hash of the whole name (FNV-1a, 64 bits: no Node crypto in workflow code).
 */
export function fairnessKey(repo: string): string {
  if (utf8Length(repo) <= MAX_FAIRNESS_KEY_BYTES) return repo;
  const hash = fnv1a64(repo);
  let prefix = '';
  for (const char of repo) {
    if (utf8Length(prefix + char) > MAX_FAIRNESS_KEY_BYTES - hash.length - 1) break;
    prefix += char;
  }
  return `${prefix}#${hash}`;
}

/** What a task's offers and SSH attempts carry to Temporal's matching. */
export function taskPriority(input: Pick<TaskInput, 'kind' | 'priority' | 'repo'>): Priority {
  const key = fairnessKey(input.repo);
  return { priorityKey: taskPriorityKey(input), ...(key ? { fairnessKey: key } : {}) };
}

function utf8Length(text: string): number {
  let bytes = 0;
  for (const char of text) {
    const code = char.codePointAt(0)!;
    bytes += code < 0x80 ? 1 : code < 0x800 ? 2 : code < 0x10000 ? 3 : 4;
  }
  return bytes;
}

function fnv1a64(text: string): string {
  let hash = 0xcbf29ce484222325n;
  for (const char of text) {
    hash ^= BigInt(char.codePointAt(0)!);
    hash = (hash * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return hash.toString(16).padStart(16, '0');
}
