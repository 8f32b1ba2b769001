// Entry point of the workflow bundle.
export { taskWorkflow } from './task';
export { agentRegistryWorkflow } from './agent-registry';
export { hostRegistryWorkflow } from './host-registry';
export { costLedgerWorkflow } from './cost-ledger';
export { deliveryReceiptWorkflow } from './delivery-receipt';
export { taskTallyWorkflow } from './task-tally';
