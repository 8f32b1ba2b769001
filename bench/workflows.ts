// The benchmark's workflow bundle: all of Drover's workflows (as `drover worker` runs them), plus a
// trivial workflow that measures what the engine itself can do on this machine.
export * from '../src/workflows/index';

export async function trivialWorkflow(): Promise<string> {
  return 'done';
}
