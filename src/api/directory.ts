// Who may pull tasks: agents from the config file (always known) and agents registered at runtime,
// which live in the agent registry workflow — not in this process. Also batches presence (last
// seen) back to that workflow, so any API process can show it.
import { randomBytes } from 'node:crypto';
import { WorkflowUpdateFailedError, type Client } from '@temporalio/client';
import { ApplicationFailure, WorkflowNotFoundError } from '@temporalio/common';
import type { DroverConfig, HostConfig } from '../config';
import { BOOKKEEPING_START } from '../workflows/priority';
import {
  AGENT_REGISTRY_MEMO,
  AGENT_REGISTRY_WORKFLOW_ID,
  AGENT_REGISTRY_WORKFLOW_TYPE,
  agentsSeenSignal,
  registerAgentUpdate,
  unregisterAgentUpdate,
  type agentRegistryWorkflow,
  type AgentRegistryState,
  type RegisteredAgent,
} from '../workflows/agent-registry';
import { hashToken, tokenMatches } from './auth';
import { ApiError } from './errors';

/** The little of a logger these need (pino and Fastify's logger both fit). */
export interface WarnLogger {
  warn(object: object, message?: string): void;
}

export interface KnownAgent {
  id: string;
  types: string[];
  labels: Record<string, string>;
  source: 'config' | 'runtime';
  tokenHash: string;
  registeredAt?: string;
}

export interface DirectoryOptions {
  config: DroverConfig;
  client: Client;
  log: WarnLogger;
  workflowId?: string;
  /** How long a snapshot of runtime agents is trusted (a deleted agent's token works this long elsewhere). */
  cacheMs?: number;
  /** An agent's presence is written at most this often per API process. */
  seenEveryMs?: number;
  /** Presence is sent in batches this often. */
  flushEveryMs?: number;
}

const EMPTY: AgentRegistryState = { agents: {}, lastSeen: {} };

export class AgentDirectory {
  readonly configAgents = new Map<string, KnownAgent>();
  readonly hosts = new Map<string, HostConfig>();
  private readonly workflowId: string;
  private snapshot: { state: AgentRegistryState; at: number } | undefined;
  private fetching: Promise<AgentRegistryState> | undefined;
  private lastForcedRefresh = 0;
  private readonly lastSent = new Map<string, number>();
  private pendingSeen = new Map<string, string>();
  private flushTimer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;

  constructor(private readonly options: DirectoryOptions) {
    this.workflowId = options.workflowId ?? AGENT_REGISTRY_WORKFLOW_ID;
    for (const agent of options.config.agents) {
      this.configAgents.set(agent.id, { id: agent.id, types: agent.types, labels: agent.labels, source: 'config', tokenHash: hashToken(agent.token) });
    }
    for (const host of options.config.hosts) this.hosts.set(host.id, host);
  }

  private handle() {
    return this.options.client.workflow.getHandle<typeof agentRegistryWorkflow>(this.workflowId);
  }

  /** Runtime agents and presence, at most `maxAgeMs` old. */
  async registry(maxAgeMs = this.options.cacheMs ?? 5_000): Promise<AgentRegistryState> {
    if (this.snapshot && Date.now() - this.snapshot.at <= maxAgeMs) return this.snapshot.state;
    this.fetching ??= (async () => {
      try {
        // The memo mirrors the registry's state: readable without a worker, in one RPC.
        const description = await this.options.client.connection.withDeadline(Date.now() + 5_000, () => this.handle().describe());
        const memo = description.memo?.[AGENT_REGISTRY_MEMO] as AgentRegistryState | undefined;
        const state = memo && typeof memo === 'object' && memo.agents && memo.lastSeen ? memo : EMPTY;
        this.snapshot = { state, at: Date.now() };
        return state;
      } catch (error) {
        if (error instanceof WorkflowNotFoundError) {
          this.snapshot = { state: EMPTY, at: Date.now() };
          return EMPTY;
        }
        throw error;
      } finally {
        this.fetching = undefined;
      }
    })();
    return this.fetching;
  }

  private fromRegistry(agent: RegisteredAgent): KnownAgent {
    return { id: agent.id, types: agent.types, labels: agent.labels, source: 'runtime', tokenHash: agent.tokenHash, registeredAt: agent.registeredAt };
  }

  /** A pull agent by id (config first, then the registry; an unknown id refreshes at most once a second). */
  async find(id: string): Promise<KnownAgent | undefined> {
    const fromConfig = this.configAgents.get(id);
    if (fromConfig) return fromConfig;
    let state: AgentRegistryState;
    try {
      state = await this.registry();
      if (!Object.hasOwn(state.agents, id) && Date.now() - this.lastForcedRefresh > 1_000) {
        this.lastForcedRefresh = Date.now();
        state = await this.registry(0);
      }
    } catch (error) {
      this.options.log.warn({ err: error }, 'agent registry unavailable');
      throw new ApiError(503, 'registry_unavailable', 'the agent registry cannot be read right now; retry later');
    }
    // Own keys only: ids such as `constructor` or `toString` are valid and must not find Object's.
    const agent = Object.hasOwn(state.agents, id) ? state.agents[id] : undefined;
    return agent ? this.fromRegistry(agent) : undefined;
  }

  /** The agent `id`, if `token` is its token; 401 otherwise (without telling which part was wrong). */
  async authenticate(id: string, token: string | undefined): Promise<KnownAgent> {
    if (!token) throw new ApiError(401, 'unauthorized', 'agent endpoints need the agent token (Authorization: Bearer …)');
    const agent = await this.find(id);
    if (!agent || !tokenMatches(token, agent.tokenHash)) throw new ApiError(401, 'bad_token', `not a valid token for agent ${id}`);
    return agent;
  }

  async all(): Promise<KnownAgent[]> {
    const state = await this.registry(1_000);
    return [...this.configAgents.values(), ...Object.values(state.agents).filter((a) => !this.configAgents.has(a.id)).map((a) => this.fromRegistry(a))];
  }

  /** Agent id → when it was last heard from (ISO time), here or by any API process. */
  async lastSeen(): Promise<Map<string, string>> {
    const state = await this.registry(1_000);
    const merged = new Map(Object.entries(state.lastSeen));
    for (const [id, at] of this.pendingSeen) {
      const known = merged.get(id);
      if (known === undefined || known < at) merged.set(id, at);
    }
    return merged;
  }

  /** Registers a pull agent at runtime; returns it with its token (generated when not given). */
  async register(request: { id: string; types: string[]; labels?: Record<string, string>; token?: string }): Promise<{ agent: KnownAgent; token: string }> {
    if (this.configAgents.has(request.id) || this.hosts.has(request.id)) {
      throw new ApiError(409, 'agent_exists', `${request.id} is already defined in the config`);
    }
    const unknownTypes = request.types.filter((t) => !this.options.config.types.includes(t));
    if (unknownTypes.length > 0) {
      throw new ApiError(422, 'unknown_agent_type', `unknown agent type ${unknownTypes.join(', ')} (known: ${this.options.config.types.join(', ')})`, { types: unknownTypes });
    }
    const token = request.token ?? randomBytes(32).toString('base64url');
    await this.options.client.workflow.start<typeof agentRegistryWorkflow>(AGENT_REGISTRY_WORKFLOW_TYPE, {
      workflowId: this.workflowId,
      ...BOOKKEEPING_START,
      args: [{}],
      workflowIdConflictPolicy: 'USE_EXISTING',
      staticSummary: 'Drover agent registry: runtime-registered pull agents and presence',
    });
    try {
      const agent = await this.handle().executeUpdate(registerAgentUpdate, {
        args: [{ id: request.id, types: request.types, labels: request.labels ?? {}, tokenHash: hashToken(token) }],
      });
      this.snapshot = undefined;
      return { agent: this.fromRegistry(agent), token };
    } catch (error) {
      throw registryError(error);
    }
  }

  async unregister(id: string): Promise<void> {
    if (this.configAgents.has(id)) throw new ApiError(409, 'agent_from_config', `agent ${id} is defined in the config; remove it there`);
    try {
      await this.handle().executeUpdate(unregisterAgentUpdate, { args: [{ id }] });
      this.snapshot = undefined;
    } catch (error) {
      if (error instanceof WorkflowNotFoundError) throw new ApiError(404, 'agent_not_found', `no agent ${id}`);
      throw registryError(error);
    }
  }

  /** Notes that an agent was heard from; written to the registry in batches. */
  seen(id: string): void {
    const now = Date.now();
    if (now - (this.lastSent.get(id) ?? 0) < (this.options.seenEveryMs ?? 10_000)) return;
    this.lastSent.set(id, now);
    this.pendingSeen.set(id, new Date(now).toISOString());
    this.flushTimer ??= setTimeout(() => {
      this.flushTimer = undefined;
      void this.flush();
    }, this.options.flushEveryMs ?? 2_000);
  }

  async flush(): Promise<void> {
    if (this.flushing) await this.flushing;
    if (this.pendingSeen.size === 0) return;
    const seen = [...this.pendingSeen].map(([id, at]) => ({ id, at }));
    this.pendingSeen = new Map();
    this.flushing = (async () => {
      try {
        await this.options.client.workflow.signalWithStart<typeof agentRegistryWorkflow, [{ seen: Array<{ id: string; at: string }> }]>(AGENT_REGISTRY_WORKFLOW_TYPE, {
          workflowId: this.workflowId,
          ...BOOKKEEPING_START,
          args: [{}],
          signal: agentsSeenSignal,
          signalArgs: [{ seen }],
        });
      } catch (error) {
        this.options.log.warn({ err: error }, 'could not record agent presence');
      } finally {
        this.flushing = undefined;
      }
    })();
    await this.flushing;
  }

  async close(): Promise<void> {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    await this.flush();
  }
}

function registryError(error: unknown): unknown {
  if (error instanceof WorkflowUpdateFailedError && error.cause instanceof ApplicationFailure) {
    if (error.cause.type === 'agent_exists') return new ApiError(409, 'agent_exists', error.cause.message);
    if (error.cause.type === 'agent_not_found') return new ApiError(404, 'agent_not_found', error.cause.message);
  }
  return error;
}
