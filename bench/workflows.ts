// The benchmark's workflow bundle: Drover's task workflow plus a trivial workflow that measures
// what the engine itself can do on this machine.
export { taskWorkflow } from '../src/workflows/task';

export async function trivialWorkflow(): Promise<string> {
  return 'done';
}
