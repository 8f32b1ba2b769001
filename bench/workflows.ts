// The benchmark's workflow bundle: Drover's task workflow plus a trivial workflow that measures
// what the engine itself can do on this machine.
export { taskWorkflow } from '../src/workflows/task';

export async function trivialWorkflow(): Promise<string> {
  return 'done';
}

// The API's agent registry (presence of pull agents), for the HTTP benchmark.
export { agentRegistryWorkflow } from '../src/workflows/agent-registry';

// The SSH hosts' presence registry, for the SSH benchmark.
export { hostRegistryWorkflow } from '../src/workflows/host-registry';
