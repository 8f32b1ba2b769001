// The result an agent may declare itself: a final JSON line
// `{"outcome": "success"|"fork"|"fail", "summary": "…", "branch": "…", "rev": "…"}`.
import { RESULT_OUTCOMES, type ResultOutcome, type TaskResult } from '../model';

export const MAX_SUMMARY_CHARS = 4_000;

const BRANCH = /^(?!.*\.\.)(?!\/)(?!.*\/$)[A-Za-z0-9._/-]{1,200}$/;
const REV = /^[0-9a-fA-F]{7,64}$/;

export function clip(text: string, max = MAX_SUMMARY_CHARS): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/** Parses one line as a declared result; undefined when it is not one. */
export function parseResultObject(value: unknown): Omit<TaskResult, 'details'> | undefined {
  if (!value || typeof value !== 'object' || Array.isArray(value)) return undefined;
  const obj = value as Record<string, unknown>;
  if (typeof obj.outcome !== 'string' || !(RESULT_OUTCOMES as readonly string[]).includes(obj.outcome)) return undefined;
  const result: Omit<TaskResult, 'details'> = {
    outcome: obj.outcome as ResultOutcome,
    summary: typeof obj.summary === 'string' ? clip(obj.summary) : '',
  };
  if (typeof obj.branch === 'string' && BRANCH.test(obj.branch)) result.branch = obj.branch;
  if (typeof obj.rev === 'string' && REV.test(obj.rev)) result.rev = obj.rev;
  return result;
}

export function parseJsonLine(line: string): unknown {
  const trimmed = line.trim();
  if (!trimmed.startsWith('{') || !trimmed.endsWith('}')) return undefined;
  try {
    return JSON.parse(trimmed);
  } catch {
    return undefined;
  }
}

/** The declared result on the last non-empty line of `text` (an agent's final message), if any. */
export function declaredResult(text: string | undefined): Omit<TaskResult, 'details'> | undefined {
  if (!text) return undefined;
  const lines = text.split('\n').map((l) => l.trim()).filter(Boolean);
  let last = lines[lines.length - 1];
  if (last === '```' && lines.length >= 2) last = lines[lines.length - 2];
  return last ? parseResultObject(parseJsonLine(last)) : undefined;
}

/** A short progress line: first line of `text`, clipped. */
export function progressLine(text: string, max = 200): string {
  const first = text.trim().split('\n', 1)[0] ?? '';
  return clip(first, max);
}

export function describeExit(exit: { code: number | null; signal?: string | null }): string {
  if (exit.code !== null) return `exit code ${exit.code}`;
  return `killed by signal ${exit.signal ?? 'unknown'}`;
}
