// Unit tests of the priority and fairness keys every offer and SSH attempt carries.
import { describe, expect, test } from 'vitest';
import { TASK_KINDS } from '../src/model';
import { DEFAULT_KIND_PRIORITIES, fairnessKey, MAX_FAIRNESS_KEY_BYTES, taskPriority, taskPriorityKey } from '../src/workflows/priority';

describe('priority keys', () => {
  test('by default CI fixes and review replies go before reviews and merges, before new work', () => {
    const key = (kind: (typeof TASK_KINDS)[number]) => taskPriorityKey({ kind });
    expect(key('fix_ci')).toBe(key('address_review'));
    expect(key('address_review')).toBeLessThan(key('review'));
    expect(key('review')).toBe(key('merge'));
    expect(key('merge')).toBeLessThan(key('implement'));
    expect(key('implement')).toBe(key('custom'));
    for (const kind of TASK_KINDS) expect(DEFAULT_KIND_PRIORITIES[kind]).toBeGreaterThan(1); // 1 is left for urgent tasks
  });

  test('a task’s own priority wins over its kind’s; one out of range does not', () => {
    expect(taskPriorityKey({ kind: 'implement', priority: 1 })).toBe(1);
    expect(taskPriorityKey({ kind: 'implement', priority: 9 })).toBe(DEFAULT_KIND_PRIORITIES.implement);
    expect(taskPriorityKey({ kind: 'implement', priority: 2.5 })).toBe(DEFAULT_KIND_PRIORITIES.implement);
  });
});

describe('fairness keys', () => {
  test('the repository, within Temporal’s 64 bytes; distinct long names stay distinct', () => {
    expect(taskPriority({ kind: 'review', repo: 'acme/web' })).toEqual({ priorityKey: 3, fairnessKey: 'acme/web' });
    expect(taskPriority({ kind: 'custom', repo: '' })).toEqual({ priorityKey: 4 });
    const long = (tail: string) => `an-organisation-with-a-long-name/${'r'.repeat(80)}${tail}`;
    const a = fairnessKey(long('a'));
    const b = fairnessKey(long('b'));
    expect(a).not.toBe(b);
    for (const key of [a, b, fairnessKey('ü'.repeat(100))]) expect(Buffer.byteLength(key)).toBeLessThanOrEqual(MAX_FAIRNESS_KEY_BYTES);
    expect(a.startsWith('an-organisation-with-a-long-name/')).toBe(true);
    expect(fairnessKey(long('a'))).toBe(a); // stable
  });
});
