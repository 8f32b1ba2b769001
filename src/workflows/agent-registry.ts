// The agent registry: pull agents registered at runtime (`POST /api/v1/agents`) and every agent's
// presence (last seen). One long-running entity workflow per namespace, so API processes keep no
// state of their own. Agents from the config file are always known and never stored here.
// The state is mirrored in the workflow's memo, so API processes read it with a describe — no
// worker needed — and the query is there for tools. Deterministic code only.
import * as wf from '@temporalio/workflow';
import { DROVER_ENTITY_ID_PREFIX } from '../names';

export const AGENT_REGISTRY_WORKFLOW_TYPE = 'agentRegistryWorkflow';
export const AGENT_REGISTRY_WORKFLOW_ID = `${DROVER_ENTITY_ID_PREFIX}agent-registry`;
/** Memo key holding the registry's state (AgentRegistryState). */
export const AGENT_REGISTRY_MEMO = 'agents';

export interface RegisteredAgent {
  id: string;
  types: string[];
  labels: Record<string, string>;
  /** SHA-256 (hex) of the agent's bearer token: the token itself is never stored. */
  tokenHash: string;
  registeredAt: string;
  registeredBy?: string;
}

export interface AgentRegistryState {
  agents: Record<string, RegisteredAgent>;
  /** Agent id → when an API process last heard from it (ISO time). */
  lastSeen: Record<string, string>;
}

export interface RegisterAgentRequest {
  id: string;
  types: string[];
  labels: Record<string, string>;
  tokenHash: string;
  registeredBy?: string;
}

export interface AgentsSeen {
  seen: Array<{ id: string; at: string }>;
}

export const registerAgentUpdate = wf.defineUpdate<RegisteredAgent, [RegisterAgentRequest]>('registerAgent');
export const unregisterAgentUpdate = wf.defineUpdate<void, [{ id: string }]>('unregisterAgent');
/** Batched presence from an API process; fire-and-forget. */
export const agentsSeenSignal = wf.defineSignal<[AgentsSeen]>('agentsSeen');
export const registryQuery = wf.defineQuery<AgentRegistryState>('registry');

const MAX_HISTORY_EVENTS = 2_000;

export async function agentRegistryWorkflow(args: { state?: AgentRegistryState } = {}): Promise<void> {
  const state: AgentRegistryState = args.state ?? { agents: {}, lastSeen: {} };
  const publish = () => wf.upsertMemo({ [AGENT_REGISTRY_MEMO]: state });
  publish();

  wf.setHandler(registryQuery, () => state);

  wf.setHandler(
    registerAgentUpdate,
    (request) => {
      const agent: RegisteredAgent = {
        id: request.id,
        types: [...request.types],
        labels: { ...request.labels },
        tokenHash: request.tokenHash,
        registeredAt: new Date().toISOString(),
        ...(request.registeredBy ? { registeredBy: request.registeredBy } : {}),
      };
      state.agents[request.id] = agent;
      publish();
      return agent;
    },
    {
      validator: (request) => {
        if (Object.hasOwn(state.agents, request.id)) {
          throw wf.ApplicationFailure.create({ type: 'agent_exists', message: `agent ${request.id} is already registered`, nonRetryable: true });
        }
      },
    },
  );

  wf.setHandler(
    unregisterAgentUpdate,
    ({ id }) => {
      delete state.agents[id];
      delete state.lastSeen[id];
      publish();
    },
    {
      validator: ({ id }) => {
        if (!Object.hasOwn(state.agents, id)) {
          throw wf.ApplicationFailure.create({ type: 'agent_not_found', message: `no registered agent ${id}`, nonRetryable: true });
        }
      },
    },
  );

  wf.setHandler(agentsSeenSignal, ({ seen }) => {
    for (const { id, at } of seen) {
      const previous = Object.hasOwn(state.lastSeen, id) ? state.lastSeen[id] : undefined;
      if (!previous || previous < at) state.lastSeen[id] = at;
    }
    publish();
  });

  // Presence keeps arriving for as long as agents run: start a fresh history now and then.
  await wf.condition(() => {
    const info = wf.workflowInfo();
    return info.continueAsNewSuggested || info.historyLength >= MAX_HISTORY_EVENTS;
  });
  await wf.condition(wf.allHandlersFinished);
  await wf.continueAsNew<typeof agentRegistryWorkflow>({ state });
}
