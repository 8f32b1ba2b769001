// Histories of finished tasks. The tests record the main paths as they run and replay them
// against the current workflow code; with DROVER_RECORD_GOLDEN=1 they are also written to
// test/golden-histories/, the committed histories that every later version must keep replaying
// (test/replay-golden.test.ts).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { temporal } from '@temporalio/proto';
import type { Client } from '@temporalio/client';

export const GOLDEN_DIR = fileURLToPath(new URL('../golden-histories', import.meta.url));

export const recordedHistories: Array<{ name: string; workflowId: string; history: temporal.api.history.v1.IHistory }> = [];

export async function recordHistory(t: { client: Client }, name: string, workflowId: string): Promise<void> {
  const history = await t.client.workflow.getHandle(workflowId).fetchHistory();
  recordedHistories.push({ name, workflowId, history });
  if (process.env.DROVER_RECORD_GOLDEN === '1') {
    mkdirSync(GOLDEN_DIR, { recursive: true });
    // Added, never rewritten: a golden stands for tasks that older code left running.
    try {
      writeFileSync(join(GOLDEN_DIR, `${name}.json`), `${JSON.stringify({ workflowId, history: goldenJson(history) }, null, 1)}\n`, { flag: 'wx' });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
  }
}

const { History } = temporal.api.history.v1;
const JSON_FORM = { longs: String, enums: String, bytes: String } as const;

/** A history as plain JSON (protobufjs's object form: longs and bytes as strings, enums by name). */
export function goldenJson(history: temporal.api.history.v1.IHistory): unknown {
  return History.toObject(History.fromObject(history), JSON_FORM);
}

export function fromGoldenJson(json: unknown): temporal.api.history.v1.IHistory {
  return History.fromObject(json as Record<string, unknown>);
}
