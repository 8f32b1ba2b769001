// Drover's one YAML config file: schema, defaults, `${ENV}` secrets and validation with errors
// that name the bad key. Every process (api, worker, dev, agent) reads the same file.
import { readFileSync } from 'node:fs';
import { type Static, Type as T } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { parse as parseYaml } from 'yaml';
import { TASK_KINDS, type TaskKind, type TaskOptions } from './model';
import { DEFAULT_KIND_PRIORITIES, PRIORITY_RANGE } from './workflows/priority';
import { TASK_ID_PATTERN } from './names';
import { parseHostKeyPins } from './ssh/host-key';
import { checkPromptTemplates } from './prompts';
import { remoteUrl } from './workspace/plan';
import type { WorkspaceSettings } from './workspace/workspace';

const Id = T.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$' });
const AgentTypeName = T.String({ pattern: '^[a-z0-9][a-z0-9_-]{0,62}$' });
/** Milliseconds, or a string such as `30s`, `5m`, `1h`, `250ms`. */
const Duration = T.Union([T.Integer({ minimum: 0 }), T.String({ pattern: '^[0-9]+(ms|s|m|h)$' })]);

const TemporalSection = T.Object(
  {
    address: T.String({ default: 'localhost:7233', minLength: 1 }),
    namespace: T.String({ default: 'default', minLength: 1 }),
    tls: T.Optional(
      T.Object(
        {
          serverName: T.Optional(T.String()),
          caFile: T.Optional(T.String()),
          certFile: T.Optional(T.String()),
          keyFile: T.Optional(T.String()),
        },
        { additionalProperties: false },
      ),
    ),
    apiKey: T.Optional(T.String()),
  },
  { additionalProperties: false, default: {} },
);

const ApiSection = T.Object(
  {
    host: T.String({ default: '127.0.0.1' }),
    port: T.Integer({ minimum: 0, maximum: 65535, default: 3000 }),
    /** How people reach the API; links in Forgejo comments point here. */
    publicUrl: T.String({ default: 'http://localhost:3000' }),
    /** Admin token for registering agents, assign and cancel. Required for those endpoints. */
    adminToken: T.Optional(T.String({ minLength: 8 })),
    bodyLimitBytes: T.Integer({ minimum: 1024, default: 1_048_576 }),
    /** Longest `wait` a dequeue long-poll may ask for. */
    maxDequeueWait: Duration,
    /** Failed authentications (bad or missing token, bad signature) one address may make per authFailureWindow; one more, and it gets 429 for the rest of it. */
    maxAuthFailures: T.Integer({ minimum: 1, maximum: 100_000, default: 30 }),
    authFailureWindow: Duration,
    /** Dequeue long-polls one agent may hold open at once on one API process; more get 429. */
    maxPollsPerAgent: T.Integer({ minimum: 1, maximum: 100, default: 2 }),
    /** How often the API's one shared watcher looks for claimable tasks while agents wait. */
    dequeuePollInterval: Duration,
    /** Temporal Web UI base URL; when set, comments and task views link to the task's history. */
    temporalUiUrl: T.Optional(T.String({ pattern: '^https?://' })),
    /**
     * Signs the links to tasks' read-only pages in comments (`/t/<id>?sig=…`). Default: derived
     * from webhook.secret or adminToken; without any, comments link to the token-guarded API.
     */
    linkSecret: T.Optional(T.String({ minLength: 16 })),
  },
  { additionalProperties: false, default: {} },
);

const WebhookSection = T.Object(
  {
    /**
     * HMAC-SHA256 secret Forgejo signs deliveries with. Required unless the API listens on loopback
     * only, or `insecure: true` says deliveries are to be taken unverified.
     */
    secret: T.Optional(T.String({ minLength: 1 })),
    insecure: T.Boolean({ default: false }),
    /** The agent type that merges approved pull requests. */
    mergeType: T.String({ default: 'boss', pattern: '^[a-z0-9][a-z0-9_-]{0,62}$' }),
    /**
     * A delivery naming a Forgejo user that is no agent type: `reject` answers 422 naming it,
     * `ignore` answers 200 with the reason (quieter when humans share the repositories).
     */
    unknownLogins: T.Union([T.Literal('reject'), T.Literal('ignore')], { default: 'ignore' }),
  },
  { additionalProperties: false, default: {} },
);

const ForgejoSection = T.Object(
  {
    url: T.Optional(T.String({ pattern: '^https?://' })),
    token: T.Optional(T.String({ minLength: 1 })),
    /** Per-request timeout of calls to the Forgejo API (comments, pull request look-ups). */
    timeout: Duration,
  },
  { additionalProperties: false, default: {} },
);

const TaskDefaultsSection = T.Object(
  {
    matchWindow: Duration,
    lease: Duration,
    maxAttempts: T.Integer({ minimum: 1, maximum: 100, default: 3 }),
    sshHeartbeatTimeout: Duration,
    runTimeout: Duration,
    cancelGrace: Duration,
    fenceGrace: Duration,
    claimConfirm: Duration,
    lapseGrace: Duration,
    /**
     * Temporal priority key (1 first … 5 last) per task kind, over the defaults: fix_ci and
     * address_review 2, review and merge 3, implement and custom 4.
     */
    priorities: T.Object(
      Object.fromEntries(TASK_KINDS.map((kind) => [kind, T.Optional(T.Integer({ minimum: PRIORITY_RANGE.first, maximum: PRIORITY_RANGE.last }))])),
      { additionalProperties: false, default: {} },
    ),
  },
  { additionalProperties: false, default: {} },
);

const AgentSection = T.Object(
  {
    id: Id,
    token: T.String({ minLength: 8 }),
    types: T.Array(AgentTypeName, { minItems: 1 }),
    labels: T.Record(T.String(), T.String(), { default: {} }),
  },
  { additionalProperties: false },
);

export const PROVIDERS = ['claude-code', 'opencode', 'command'] as const;
const ProviderCommand = T.Object(
  {
    provider: T.Union(PROVIDERS.map((p) => T.Literal(p)), { default: 'command' }),
    /** argv of the agent command; run in the task's workspace (or the host's working directory), prompt on stdin. */
    command: T.Array(T.String({ minLength: 1 }), { minItems: 1 }),
    /** Tool uses the agent CLI refused (its permission mode): `fail` the task (default), or `flag` them in the result. */
    permissionDenials: T.Optional(T.Union([T.Literal('fail'), T.Literal('flag')])),
  },
  { additionalProperties: false },
);

const HostSection = T.Object(
  {
    id: Id,
    address: T.String({ minLength: 1 }),
    port: T.Integer({ minimum: 1, maximum: 65535, default: 22 }),
    user: T.String({ minLength: 1 }),
    /** The private key itself (PEM/OpenSSH text), usually as `${ENV_VAR}`. */
    privateKey: T.Optional(T.String({ minLength: 1 })),
    /** Or: the name of an environment variable holding the key, read by the worker only (the API never needs it). */
    privateKeyEnv: T.Optional(T.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$' })),
    /** Or: a path to the private key file. */
    privateKeyPath: T.Optional(T.String({ minLength: 1 })),
    passphrase: T.Optional(T.String()),
    /**
     * Pinned host key: a public key (`ssh-ed25519 AAAA…`), a known_hosts line, or a `SHA256:`
     * fingerprint; several, one per line. An unknown or changed key is refused.
     */
    hostKey: T.String({ minLength: 1 }),
    types: T.Array(AgentTypeName, { minItems: 1 }),
    slots: T.Integer({ minimum: 1, maximum: 1000, default: 1 }),
    /** Where agents run on the host (absolute, or relative to the user's home). */
    workdir: T.String({ default: '.' }),
    /** Per agent type: which provider parses the output and which command runs. */
    agents: T.Record(T.String(), ProviderCommand),
    /** How often the host is checked with a cheap SSH command; a failed check takes it offline. */
    healthCheckInterval: Duration,
    connectTimeout: Duration,
    /** Between SIGTERM and SIGKILL when a run is stopped. */
    killGrace: Duration,
    /**
     * Resume an earlier session of the same session key: `same-instance` (default: only when it
     * ran on this host, where the agent keeps its sessions), `always`, or `never`.
     */
    sessionResume: T.Union([T.Literal('same-instance'), T.Literal('always'), T.Literal('never')], { default: 'same-instance' }),
  },
  { additionalProperties: false },
);

const WorkspacesSection = T.Object(
  {
    /**
     * Clone URL of a task's repository: `{repo}` (owner/name), `{owner}` and `{name}` are filled
     * in. Default: `<forgejo.url>/{repo}.git` when forgejo.url is set; without either, agents run
     * in their machine's working directory and nothing is checked out.
     */
    remoteUrl: T.Optional(T.String({ minLength: 1 })),
    /** After the agent: `auto` pushes the task branch's new commits, `agent` leaves it to the agent, `never` pushes nothing. */
    push: T.Union([T.Literal('auto'), T.Literal('agent'), T.Literal('never')], { default: 'auto' }),
    /** How long a failed attempt's worktree is kept on its machine before it is swept. */
    keepFailed: Duration,
    /** What Drover's own git commands (fetch, push, ls-remote) authenticate with. Never on a command line or in logs. */
    credentials: T.Optional(
      T.Object(
        {
          /** HTTP(S) remotes: an access token, given to git by an askpass helper reading a 0600 file. */
          token: T.Optional(T.String({ minLength: 1 })),
          username: T.String({ default: 'drover', pattern: '^[A-Za-z0-9_.@-]{1,100}$' }),
          /** SSH remotes: a deploy key (private key text, usually `${ENV}`) and the server's known_hosts lines. */
          sshKey: T.Optional(T.String({ minLength: 1 })),
          knownHosts: T.Optional(T.String({ minLength: 1 })),
        },
        { additionalProperties: false },
      ),
    ),
    /** Give the agent the same credentials (GIT_ASKPASS / GIT_SSH in its environment), e.g. with push: agent. */
    agentCredentials: T.Boolean({ default: false }),
  },
  { additionalProperties: false, default: {} },
);

export const ConfigSchema = T.Object(
  {
    temporal: TemporalSection,
    api: ApiSection,
    webhook: WebhookSection,
    forgejo: ForgejoSection,
    /** Agent types Drover knows; tasks for other types are refused. */
    types: T.Array(AgentTypeName, { default: ['dev', 'reviewer', 'boss'] }),
    /** Forgejo login → agent type; a login not listed maps to the type of the same name. */
    logins: T.Record(T.String(), AgentTypeName, { default: {} }),
    /** Prompt templates per task kind (`{{title}}`, `{{body}}`, `{{url}}`, `{{reviews}}`…; see src/prompts.ts). */
    prompts: T.Record(T.String(), T.String(), { default: {} }),
    tasks: TaskDefaultsSection,
    workspaces: WorkspacesSection,
    /**
     * Daily spend (USD, UTC days) per repository (`owner/name`, or `*` for every other one): once
     * a repository's agents have spent it, its new tasks stay pending until the next day.
     */
    budgets: T.Object({ dailyUsd: T.Record(T.String(), T.Number({ minimum: 0 }), { default: {} }) }, { additionalProperties: false, default: {} }),
    agents: T.Array(AgentSection, { default: [] }),
    hosts: T.Array(HostSection, { default: [] }),
    log: T.Object({ level: T.String({ default: 'info' }) }, { additionalProperties: false, default: {} }),
  },
  { additionalProperties: false },
);

export type DroverConfig = Static<typeof ConfigSchema>;
export type HostConfig = DroverConfig['hosts'][number];
export type AgentConfig = DroverConfig['agents'][number];

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

const DURATION_DEFAULTS = {
  'api.maxDequeueWait': '60s',
  'api.dequeuePollInterval': '250ms',
  'api.authFailureWindow': '1m',
  'forgejo.timeout': '10s',
  'tasks.matchWindow': '30s',
  'tasks.lease': '60s',
  'tasks.sshHeartbeatTimeout': '30s',
  'tasks.runTimeout': '6h',
  'tasks.cancelGrace': '30s',
  'tasks.fenceGrace': '60s',
  'tasks.claimConfirm': '15s',
  'tasks.lapseGrace': '5s',
  'workspaces.keepFailed': '24h',
} as const;

export function durationMs(value: number | string): number {
  if (typeof value === 'number') return value;
  const match = /^([0-9]+)(ms|s|m|h)$/.exec(value);
  if (!match) throw new ConfigError(`bad duration ${JSON.stringify(value)}`);
  const unit = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }[match[2] as 'ms' | 's' | 'm' | 'h'];
  return Number(match[1]) * unit;
}

/** Replaces `${NAME}` in every string with the environment variable, naming the key when unset. */
function expandEnv(node: unknown, path: string, env: NodeJS.ProcessEnv): unknown {
  if (typeof node === 'string') {
    return node.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => {
      const value = env[name];
      if (value === undefined) throw new ConfigError(`${path || '(root)'}: environment variable ${name} is not set`);
      return value;
    });
  }
  if (Array.isArray(node)) return node.map((item, i) => expandEnv(item, `${path}[${i}]`, env));
  if (node && typeof node === 'object') {
    return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, expandEnv(v, path ? `${path}.${k}` : k, env)]));
  }
  return node;
}

function pointerToKey(pointer: string): string {
  return pointer
    .split('/')
    .filter(Boolean)
    .map((part) => (/^[0-9]+$/.test(part) ? `[${part}]` : `.${part}`))
    .join('')
    .replace(/^\./, '') || '(root)';
}

/** Validates a parsed config object; throws ConfigError listing each bad key. */
export function parseConfig(raw: unknown, env: NodeJS.ProcessEnv = process.env): DroverConfig {
  const expanded = expandEnv(raw ?? {}, '', env) as Record<string, unknown>;
  const withDefaults = Value.Default(ConfigSchema, Value.Clone(expanded)) as Record<string, Record<string, unknown>>;
  for (const [key, fallback] of Object.entries(DURATION_DEFAULTS)) {
    const [section, field] = key.split('.') as [string, string];
    if (withDefaults[section] && withDefaults[section][field] === undefined) withDefaults[section][field] = fallback;
  }
  for (const host of (withDefaults.hosts as unknown as Array<Record<string, unknown>>) ?? []) {
    if (host && typeof host === 'object') {
      host.healthCheckInterval ??= '5s';
      host.connectTimeout ??= '10s';
      host.killGrace ??= '5s';
    }
  }
  const errors = [...Value.Errors(ConfigSchema, withDefaults)];
  if (errors.length > 0) {
    // Report each key once, with the most specific message.
    const seen = new Map<string, string>();
    for (const error of errors) {
      const key = pointerToKey(error.path);
      const message = error.schema === Duration ? `must be a duration: milliseconds, or like 250ms, 30s, 5m, 6h (got ${JSON.stringify(error.value)})` : error.message;
      if (!seen.has(key)) seen.set(key, message);
    }
    throw new ConfigError(`invalid config:\n${[...seen].map(([key, message]) => `  ${key}: ${message}`).join('\n')}`);
  }
  const config = withDefaults as unknown as DroverConfig;
  checkConsistency(config);
  return config;
}

function checkConsistency(config: DroverConfig): void {
  const problems: string[] = [];
  const known = new Set(config.types);
  const ids = new Set<string>();
  config.agents.forEach((agent, i) => {
    if (ids.has(agent.id)) problems.push(`agents[${i}].id: duplicate id ${agent.id}`);
    ids.add(agent.id);
    agent.types.forEach((type, j) => {
      if (!known.has(type)) problems.push(`agents[${i}].types[${j}]: unknown agent type ${type} (not in types)`);
    });
  });
  config.hosts.forEach((host, i) => {
    if (ids.has(host.id)) problems.push(`hosts[${i}].id: duplicate id ${host.id} (ids are shared by hosts and agents)`);
    ids.add(host.id);
    const keySources = [host.privateKey, host.privateKeyEnv, host.privateKeyPath].filter((v) => v !== undefined).length;
    if (keySources !== 1) problems.push(`hosts[${i}]: set exactly one of privateKey, privateKeyEnv or privateKeyPath`);
    try {
      parseHostKeyPins(host.hostKey);
    } catch (error) {
      problems.push(`hosts[${i}].hostKey: ${(error as Error).message}`);
    }
    host.types.forEach((type, j) => {
      if (!known.has(type)) problems.push(`hosts[${i}].types[${j}]: unknown agent type ${type} (not in types)`);
      if (!host.agents[type]) problems.push(`hosts[${i}].agents.${type}: no command for agent type ${type}`);
    });
  });
  Object.entries(config.logins).forEach(([login, type]) => {
    if (!known.has(type)) problems.push(`logins.${login}: unknown agent type ${type} (not in types)`);
  });
  if (!known.has(config.webhook.mergeType)) problems.push(`webhook.mergeType: unknown agent type ${config.webhook.mergeType} (not in types)`);
  problems.push(...checkPromptTemplates(config.prompts));
  problems.push(...checkDurations(config));
  if (!config.webhook.secret && !config.webhook.insecure && !isLoopback(config.api.host)) {
    problems.push(
      `webhook.secret: required when the API listens on ${config.api.host} (anyone who reaches it could post deliveries); ` +
        'set it (and the same secret in Forgejo), listen on loopback only, or set webhook.insecure: true',
    );
  }
  problems.push(...checkWorkspaces(config));
  if (!TASK_ID_PATTERN.test(config.temporal.namespace)) problems.push(`temporal.namespace: invalid namespace`);
  if (problems.length > 0) throw new ConfigError(`invalid config:\n${problems.map((p) => `  ${p}`).join('\n')}`);
}

/** The longest duration timers and Temporal take: 2³¹−1 ms, about 24.8 days. */
export const MAX_DURATION_MS = 2 ** 31 - 1;

/** The least each duration may be, in ms; every one is at most MAX_DURATION_MS. */
const DURATION_MINIMUMS: Record<keyof typeof DURATION_DEFAULTS, number> = {
  'api.maxDequeueWait': 0,
  'api.dequeuePollInterval': 10,
  'api.authFailureWindow': 1_000,
  'forgejo.timeout': 100,
  'tasks.matchWindow': 1,
  'tasks.lease': 1_000,
  'tasks.sshHeartbeatTimeout': 1_000,
  'tasks.runTimeout': 1_000,
  'tasks.cancelGrace': 0,
  'tasks.fenceGrace': 10_000,
  'tasks.claimConfirm': 1_000,
  'tasks.lapseGrace': 0,
  'workspaces.keepFailed': 60_000,
};
const HOST_DURATION_MINIMUMS = { healthCheckInterval: 100, connectTimeout: 100, killGrace: 0 } as const;

/** Durations within what timers and Temporal take, each error naming its key. */
function checkDurations(config: DroverConfig): string[] {
  const problems: string[] = [];
  const check = (key: string, value: number | string | undefined, minimum: number): number | undefined => {
    if (value === undefined) return undefined;
    const ms = durationMs(value);
    if (ms < minimum) problems.push(`${key}: must be at least ${minimum} ms (got ${value})`);
    else if (ms > MAX_DURATION_MS) problems.push(`${key}: must be at most ${MAX_DURATION_MS} ms, about 24 days (got ${value})`);
    return ms;
  };
  const sections = config as unknown as Record<string, Record<string, number | string>>;
  for (const [key, minimum] of Object.entries(DURATION_MINIMUMS)) {
    const [section, field] = key.split('.') as [string, string];
    check(key, sections[section]?.[field], minimum);
  }
  const fenceGraceMs = durationMs(config.tasks.fenceGrace);
  config.hosts.forEach((host, i) => {
    for (const [field, minimum] of Object.entries(HOST_DURATION_MINIMUMS)) {
      const ms = check(`hosts[${i}].${field}`, host[field as keyof typeof HOST_DURATION_MINIMUMS], minimum);
      // An unheld run must be stopped (its kill grace included) well inside the fence grace.
      if (field === 'killGrace' && ms !== undefined && ms + 8_000 > fenceGraceMs) {
        problems.push(`hosts[${i}].killGrace: must be at least 8 s less than tasks.fenceGrace (${config.tasks.fenceGrace})`);
      }
    }
  });
  return problems;
}

function checkWorkspaces(config: DroverConfig): string[] {
  const problems: string[] = [];
  const template = config.workspaces.remoteUrl;
  if (template !== undefined && !remoteUrl(template, 'owner/name')) {
    problems.push('workspaces.remoteUrl: must give a clone URL (https://, ssh://, git@host:path, file:// or an absolute path) with {repo}, or {owner} and {name}');
  } else if (template !== undefined && !template.includes('{repo}') && !(template.includes('{owner}') && template.includes('{name}'))) {
    problems.push('workspaces.remoteUrl: must contain {repo}, or {owner} and {name}');
  }
  const credentials = config.workspaces.credentials;
  if (credentials?.sshKey && !credentials.knownHosts) problems.push('workspaces.credentials.knownHosts: required with sshKey (the git server\'s host key is checked)');
  return problems;
}

/** The clone URL template of task repositories, if any: workspaces.remoteUrl, or forgejo.url's. */
export function remoteUrlTemplate(config: DroverConfig): string | undefined {
  if (config.workspaces.remoteUrl) return config.workspaces.remoteUrl;
  return config.forgejo.url ? `${config.forgejo.url.replace(/\/+$/, '')}/{repo}.git` : undefined;
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

export function loadConfig(path: string | undefined, env: NodeJS.ProcessEnv = process.env): DroverConfig {
  if (!path) return parseConfig({}, env);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError(`cannot read config ${path}: ${(error as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (error) {
    throw new ConfigError(`config ${path} is not valid YAML: ${(error as Error).message}`);
  }
  return parseConfig(raw, env);
}

/** How hosts and agents make workspaces, from the config (the working directory is each machine's). */
export function workspaceSettings(config: DroverConfig): Omit<WorkspaceSettings, 'workdir'> {
  const { credentials, push, keepFailed, agentCredentials } = config.workspaces;
  return {
    push,
    keepFailedMs: durationMs(keepFailed),
    agentCredentials,
    ...(credentials ? { credentials: { username: credentials.username, token: credentials.token, sshKey: credentials.sshKey, knownHosts: credentials.knownHosts } } : {}),
  };
}

/** Task options from the config's defaults. */
/** The priority key a new task of `kind` gets: the config's, else the kind's default. */
export function kindPriority(config: DroverConfig, kind: TaskKind): number {
  return (config.tasks.priorities as Partial<Record<TaskKind, number>>)[kind] ?? DEFAULT_KIND_PRIORITIES[kind];
}

export function taskDefaults(config: DroverConfig): TaskOptions & Record<string, number> {
  return {
    matchWindowMs: durationMs(config.tasks.matchWindow),
    leaseMs: durationMs(config.tasks.lease),
    maxAttempts: config.tasks.maxAttempts,
    sshHeartbeatTimeoutMs: durationMs(config.tasks.sshHeartbeatTimeout),
    runTimeoutMs: durationMs(config.tasks.runTimeout),
    maxHistoryEvents: 2_000,
    cancelGraceMs: durationMs(config.tasks.cancelGrace),
    fenceGraceMs: durationMs(config.tasks.fenceGrace),
    claimConfirmMs: durationMs(config.tasks.claimConfirm),
    lapseGraceMs: durationMs(config.tasks.lapseGrace),
  };
}
