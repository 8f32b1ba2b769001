// Task counts by state × agent type × mode: the pure state the task tally workflow keeps
// (./task-tally.ts), so that tests drive it without Temporal. Imported by workflow code: no I/O.
//
// Each transition names the task and where it is now (`to`); the book takes the task out of where
// it had it and puts it there. Open tasks (pending, running) are kept by id, so the book always
// knows what to decrement: a transition sent twice changes nothing, and one that was lost is mended
// by the task's next one. That matters because the server drops a signal sent in the workflow task
// that ends the sending run (a task's last publish before it continues-as-new): the next run
// restates where the task is. Closed tasks never move again: they are only counted. So no count
// can fall below zero.

/** Where a task is: its state, agent type and execution mode. */
export interface TaskPlace {
  state: string;
  type: string;
  mode: string;
}

export interface TaskTransition {
  taskId: string;
  /** Where the task was, as its workflow last published it: informative only (see above). */
  from?: TaskPlace;
  to: TaskPlace;
}

/**
 * A task's transition as its tellTaskTally activity tells it, named by the tell's own id (the
 * same on every try of the activity): a tally takes each tell id once within its run.
 */
export interface TaskTell {
  tellId: string;
  transition: TaskTransition;
}

export interface TaskCount extends TaskPlace {
  count: number;
}

export interface TaskTallyState {
  /** Open tasks: task id → place key (see placeKey). */
  open: Record<string, string>;
  /** Closed tasks counted, by place key. */
  closed: Record<string, number>;
}

export const OPEN_TASK_STATES: readonly string[] = ['pending', 'running'];

export function isOpenState(state: string): boolean {
  return OPEN_TASK_STATES.includes(state);
}

/** Where a task's status says it is. */
export function taskPlace(status: { state: string; mode: string; input: { agentType: string } }): TaskPlace {
  return { state: status.state, type: status.input.agentType, mode: status.mode };
}

/** Where a new task is: pending, its mode undecided (TaskMachine.create; its start's search attributes say so too). */
export function newTaskPlace(type: string): TaskPlace {
  return { state: 'pending', type, mode: 'undecided' };
}

/**
 * How many tally workflows share the tasks, each counting the tasks whose ids fall to it
 * (tallyShardOf). A tally carries its open tasks' ids through continue-as-new, about 85 bytes a
 * task against Temporal's 2 MB payload limit: one tally would stop at about 24,000 open tasks, eight
 * at about 190,000; and the tasks' tells are spread over eight workflows. Changing it re-deals
 * the tasks: a deployment that does starts fresh tallies, seeded from visibility (src/task-tally.ts).
 */
export const TASK_TALLY_SHARDS = 8;

/** The tally a task is counted in: FNV-1a of its id, over TASK_TALLY_SHARDS. */
export function tallyShardOf(taskId: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < taskId.length; i++) {
    hash ^= taskId.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash % TASK_TALLY_SHARDS;
}

export function placeKey(place: TaskPlace): string {
  return JSON.stringify([place.state, place.type, place.mode]);
}

function placeOf(key: string): TaskPlace | undefined {
  try {
    const parsed: unknown = JSON.parse(key);
    if (Array.isArray(parsed) && parsed.length === 3 && parsed.every((part) => typeof part === 'string')) {
      const [state, type, mode] = parsed as [string, string, string];
      return { state, type, mode };
    }
  } catch {
    // not a key this book wrote
  }
  return undefined;
}

const validPlace = (place: unknown): place is TaskPlace =>
  !!place &&
  typeof place === 'object' &&
  typeof (place as TaskPlace).state === 'string' &&
  (place as TaskPlace).state !== '' &&
  typeof (place as TaskPlace).type === 'string' &&
  typeof (place as TaskPlace).mode === 'string';

/** A transition the book can take (one sent from outside may be anything). */
export function isTransition(transition: unknown): transition is TaskTransition {
  const t = transition as TaskTransition | undefined;
  return !!t && typeof t === 'object' && typeof t.taskId === 'string' && t.taskId !== '' && validPlace(t.to);
}

/** A tell the tally can take (one sent from outside may be anything). */
export function isTell(tell: unknown): tell is TaskTell {
  const t = tell as TaskTell | undefined;
  return !!t && typeof t === 'object' && typeof t.tellId === 'string' && t.tellId !== '' && isTransition(t.transition);
}

const countOf = (n: unknown): number => (typeof n === 'number' && Number.isInteger(n) && n > 0 ? n : 0);

export class TaskTallyBook {
  // Maps, not objects: a task id may be any string the id pattern allows, `__proto__` included.
  private readonly open: Map<string, string>;
  private readonly closed: Map<string, number>;

  constructor(state?: Partial<TaskTallyState>) {
    this.open = new Map(Object.entries(state?.open ?? {}).filter(([, key]) => typeof key === 'string' && placeOf(key) !== undefined));
    this.closed = new Map(Object.entries(state?.closed ?? {}).filter(([key, n]) => countOf(n) > 0 && placeOf(key) !== undefined));
  }

  /** A plain copy, for continue-as-new and for seeding a new tally. */
  snapshot(): TaskTallyState {
    return { open: Object.fromEntries(this.open), closed: Object.fromEntries(this.closed) };
  }

  /** Moves a task to `to`. False when nothing changed (a repeat) or the transition is malformed. */
  apply(transition: TaskTransition): boolean {
    if (!isTransition(transition)) return false;
    const to = placeKey(transition.to);
    const was = this.open.get(transition.taskId);
    if (was === to) return false;
    this.open.delete(transition.taskId);
    if (isOpenState(transition.to.state)) this.open.set(transition.taskId, to);
    else this.closed.set(to, (this.closed.get(to) ?? 0) + 1);
    return true;
  }

  /** Non-zero counts, by type, state and mode (code-point order). */
  counts(): TaskCount[] {
    const sums = new Map(this.closed);
    for (const key of this.open.values()) sums.set(key, (sums.get(key) ?? 0) + 1);
    return countRows(sums);
  }

  /** How many open tasks the book holds by id (what continue-as-new carries). */
  get openTasks(): number {
    return this.open.size;
  }
}

/** Counts of several tallies (the shards) summed, in counts()' order. */
export function sumCounts(tallies: readonly TaskCount[][]): TaskCount[] {
  const sums = new Map<string, number>();
  for (const rows of tallies) {
    for (const row of rows) {
      const key = placeKey(row);
      sums.set(key, (sums.get(key) ?? 0) + countOf(row.count));
    }
  }
  return countRows(sums);
}

/**
 * Closed-task counts (by place key) less what `counted` already has of each place: what a tally
 * seeded beside running ones takes, so that no closed task is counted twice.
 */
export function closedNotCounted(closed: Readonly<Record<string, number>>, counted: readonly TaskCount[]): Record<string, number> {
  const already = new Map(counted.map((row) => [placeKey(row), row.count]));
  const left: Record<string, number> = {};
  for (const [key, n] of Object.entries(closed)) {
    const rest = countOf(n) - (already.get(key) ?? 0);
    if (rest > 0 && placeOf(key) !== undefined) left[key] = rest;
  }
  return left;
}

/** Non-zero rows from counts by place key, by type, state and mode (code-point order). */
function countRows(sums: ReadonlyMap<string, number>): TaskCount[] {
  const rows: TaskCount[] = [];
  for (const [key, count] of sums) {
    const place = placeOf(key);
    if (place && count > 0) rows.push({ ...place, count });
  }
  const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  return rows.sort((a, b) => cmp(a.type, b.type) || cmp(a.state, b.state) || cmp(a.mode, b.mode));
}
