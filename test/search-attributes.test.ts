// `drover setup-search-attributes` against a real server: registers what is missing, idempotently.
import { randomUUID } from 'node:crypto';
import { Connection } from '@temporalio/client';
import { msToTs } from '@temporalio/common/lib/time';
import { inject, expect, test } from 'vitest';
import { SEARCH_ATTRIBUTE_DEFINITIONS } from '../src/names';
import proto from '@temporalio/proto';
import { registerSearchAttributes, SearchAttributesFullError } from '../src/temporal-connection';

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

test('a namespace with no room left for them: an error that names what is in use and what to do', async () => {
  const connection = await Connection.connect({ address: inject('temporalAddress') });
  try {
    const namespace = `sa-full-${randomUUID().slice(0, 8)}`;
    await connection.workflowService.registerNamespace({ namespace, workflowExecutionRetentionPeriod: msToTs('1 day') });
    // Fill the Keyword slots with someone else's attributes, one at a time, until the server refuses.
    const Keyword = proto.temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD;
    const others: string[] = [];
    for (let i = 0; i < 100; i++) {
      const name = `OtherTeam${i}`;
      const added = await waitForNamespace(() => connection.operatorService.addSearchAttributes({ namespace, searchAttributes: { [name]: Keyword } })).then(
        () => true,
        (error: Error) => {
          if (/cannot have more than/.test(error.message)) return false;
          throw error;
        },
      );
      if (!added) break;
      others.push(name);
    }
    expect(others.length).toBeGreaterThan(0);
    const error = await registerSearchAttributes(connection, namespace).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SearchAttributesFullError);
    const message = (error as Error).message;
    expect(message).toContain(`namespace ${namespace} has no room for Drover's search attributes`);
    expect(message).toContain(`${others.length} are in use`);
    expect(message).toContain(others[0]);
    expect(message).toContain('DroverState');
    expect(message).toContain('temporal operator search-attribute remove');
  } finally {
    await connection.close();
  }
}, 120_000);

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
