// `drover setup-search-attributes` against a real server: registers what is missing, idempotently.
import { randomUUID } from 'node:crypto';
import { Connection } from '@temporalio/client';
import { msToTs } from '@temporalio/common/lib/time';
import { inject, expect, test } from 'vitest';
import { SEARCH_ATTRIBUTE_DEFINITIONS } from '../src/names';
import { registerSearchAttributes } from '../src/temporal-connection';

test('registers every Drover search attribute on a namespace that lacks them, then nothing', async () => {
  const connection = await Connection.connect({ address: inject('temporalAddress') });
  try {
    const namespace = `sa-${randomUUID().slice(0, 8)}`;
    await connection.workflowService.registerNamespace({ namespace, workflowExecutionRetentionPeriod: msToTs('1 day') });
    const names = SEARCH_ATTRIBUTE_DEFINITIONS.map((d) => d.name).sort();
    const first = await waitForNamespace(() => registerSearchAttributes(connection, namespace));
    expect([...first].sort()).toEqual(names);
    expect(await registerSearchAttributes(connection, namespace)).toEqual([]);
    const listed = await connection.operatorService.listSearchAttributes({ namespace });
    expect(Object.keys(listed.customAttributes ?? {})).toEqual(expect.arrayContaining(names));
    // The shared test namespace already has them (the dev server registers them at start).
    expect(await registerSearchAttributes(connection, 'default')).toEqual([]);
  } finally {
    await connection.close();
  }
});

/** A namespace just registered takes a moment to be known to every service. */
async function waitForNamespace<T>(action: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await action();
    } catch (error) {
      if (i >= 50) throw error;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}
