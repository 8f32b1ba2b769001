// A Temporal client whose calls are counted at the gRPC service: what a test asserts about the
// visibility calls (list, count, scan) and queries Drover makes.
import { Client, Connection } from '@temporalio/client';
import { inject } from 'vitest';
import { TaskClient } from '../../src/task-client';

const VISIBILITY_METHODS = ['listWorkflowExecutions', 'countWorkflowExecutions', 'scanWorkflowExecutions', 'listOpenWorkflowExecutions', 'listClosedWorkflowExecutions'];
const COUNTED_METHODS = [...VISIBILITY_METHODS, 'queryWorkflow'];

export interface CountingClient {
  client: Client;
  tasks: TaskClient;
  visibilityCalls(): number;
  queries(): number;
  close(): Promise<void>;
}

export async function countingClient(namespace: string, address: string = inject('temporalAddress')): Promise<CountingClient> {
  const connection = await Connection.connect({ address });
  const calls = new Map<string, number>();
  const service = connection.workflowService as unknown as Record<string, (...args: unknown[]) => unknown>;
  for (const name of COUNTED_METHODS) {
    const original = service[name]!.bind(service);
    service[name] = (...args: unknown[]) => {
      calls.set(name, (calls.get(name) ?? 0) + 1);
      return original(...args);
    };
  }
  const client = new Client({ connection, namespace });
  return {
    client,
    tasks: new TaskClient(client),
    visibilityCalls: () => VISIBILITY_METHODS.reduce((sum, name) => sum + (calls.get(name) ?? 0), 0),
    queries: () => calls.get('queryWorkflow') ?? 0,
    close: () => connection.close(),
  };
}
