// The providers by name (the `provider` of a host's or a pull agent's command).
import { claudeCode } from './claude-code';
import { command } from './command';
import { openCode } from './opencode';
import type { Provider, ProviderName } from './types';

export type { AgentExit, OutputParser, ParserOptions, Provider, ProviderName, ResultDetails } from './types';

export const PROVIDERS: Record<ProviderName, Provider> = {
  'claude-code': claudeCode,
  opencode: openCode,
  command,
};

export function getProvider(name: string): Provider {
  const provider = (PROVIDERS as Record<string, Provider | undefined>)[name];
  if (!provider) throw new Error(`unknown provider ${JSON.stringify(name)} (known: ${Object.keys(PROVIDERS).join(', ')})`);
  return provider;
}
