// Unit tests of config parsing: defaults, secrets from the environment, errors naming the bad key.
import { describe, expect, test } from 'vitest';
import { ConfigError, durationMs, parseConfig, taskDefaults } from '../src/config';

const host = {
  id: 'h1',
  address: '127.0.0.2',
  user: 'agent',
  privateKeyPath: '/keys/id',
  hostKey: 'SHA256:abc',
  types: ['dev'],
  agents: { dev: { provider: 'claude-code', command: ['claude', '-p'] } },
};

function errorOf(raw: unknown, env: NodeJS.ProcessEnv = {}): string {
  try {
    parseConfig(raw, env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as Error).message;
  }
  throw new Error('expected a ConfigError');
}

describe('parseConfig', () => {
  test('an empty config gets every default', () => {
    const config = parseConfig({}, {});
    expect(config.temporal).toEqual({ address: 'localhost:7233', namespace: 'default' });
    expect(config.api.port).toBe(3000);
    expect(config.types).toEqual(['dev', 'reviewer', 'boss']);
    expect(taskDefaults(config)).toMatchObject({ matchWindowMs: 30_000, leaseMs: 60_000, maxAttempts: 3 });
  });

  test('secrets come from ${ENV} references', () => {
    const config = parseConfig({ webhook: { secret: '${HOOK_SECRET}' }, forgejo: { url: 'https://git.example', token: 'token-${SUFFIX}' } }, { HOOK_SECRET: 's3cret', SUFFIX: 'x' });
    expect(config.webhook.secret).toBe('s3cret');
    expect(config.forgejo.token).toBe('token-x');
  });

  test('a missing environment variable names the key', () => {
    expect(errorOf({ webhook: { secret: '${NOPE}' } })).toContain('webhook.secret: environment variable NOPE is not set');
  });

  test('wrong types and unknown keys name the key', () => {
    expect(errorOf({ api: { port: 'eighty' } })).toMatch(/api\.port/);
    expect(errorOf({ api: { prot: 3000 } })).toMatch(/api/);
    expect(errorOf({ tasks: { lease: 'soon' } })).toMatch(/tasks\.lease/);
    expect(errorOf({ hosts: [{ ...host, slots: 0 }] })).toMatch(/hosts\[0\]\.slots/);
  });

  test('cross-references are checked: types, duplicate ids, commands per type', () => {
    expect(errorOf({ agents: [{ id: 'a', token: 'tokentoken', types: ['janitor'] }] })).toContain('agents[0].types[0]: unknown agent type janitor');
    expect(errorOf({ hosts: [host, host] })).toContain('hosts[1].id: duplicate id h1');
    expect(errorOf({ hosts: [{ ...host, types: ['dev', 'reviewer'] }] })).toContain('hosts[0].agents.reviewer: no command');
    expect(errorOf({ logins: { 'bot-dev': 'janitor' } })).toContain('logins.bot-dev: unknown agent type janitor');
  });

  test('durations accept milliseconds and unit strings', () => {
    expect(durationMs(250)).toBe(250);
    expect(durationMs('250ms')).toBe(250);
    expect(durationMs('30s')).toBe(30_000);
    expect(durationMs('5m')).toBe(300_000);
    expect(durationMs('6h')).toBe(21_600_000);
    expect(taskDefaults(parseConfig({ tasks: { matchWindow: '2s', lease: 1500 } }, {}))).toMatchObject({ matchWindowMs: 2_000, leaseMs: 1_500 });
  });

  test('durations are bounded, each error naming its key', () => {
    expect(errorOf({ tasks: { lease: '30d' } })).toContain('tasks.lease: must be a duration: milliseconds, or like 250ms, 30s, 5m, 6h (got "30d")');
    const message = errorOf({ tasks: { runTimeout: '0s', matchWindow: 2 ** 31 }, forgejo: { timeout: '1ms' }, hosts: [{ ...host, killGrace: '1h' }], types: ['dev'] });
    expect(message).toContain('tasks.runTimeout: must be at least 1000 ms (got 0s)');
    expect(message).toContain('tasks.matchWindow: must be at most 2147483647 ms');
    expect(message).toContain('forgejo.timeout: must be at least 100 ms');
    expect(message).toContain('hosts[0].killGrace: must be at least 8 s less than tasks.fenceGrace');
    expect(() => parseConfig({ tasks: { runTimeout: '24h', fenceGrace: '2m' } }, {})).not.toThrow();
  });

  test('a webhook secret is required unless the API listens on loopback only, or webhook.insecure says so', () => {
    expect(() => parseConfig({}, {})).not.toThrow(); // 127.0.0.1 by default
    expect(() => parseConfig({ api: { host: '::1' } }, {})).not.toThrow();
    expect(errorOf({ api: { host: '0.0.0.0' } })).toContain('webhook.secret: required when the API listens on 0.0.0.0');
    expect(() => parseConfig({ api: { host: '0.0.0.0' }, webhook: { secret: 's3cret' } }, {})).not.toThrow();
    expect(() => parseConfig({ api: { host: '0.0.0.0' }, webhook: { insecure: true } }, {})).not.toThrow();
  });

  test('users who are no agent type are ignored by default (human activity)', () => {
    expect(parseConfig({}, {}).webhook.unknownLogins).toBe('ignore');
  });
});
