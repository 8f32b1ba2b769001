// The `drover agent` subcommand (registered by src/cli.ts).
import { hostname } from 'node:os';
import { basename, resolve } from 'node:path';
import { type Command, Option } from 'commander';
import { durationMs } from '../config';
import { createLogger } from '../log';
import { PROVIDERS, type ProviderName } from '../providers';
import type { ResumePolicy } from '../sessions';
import { PullAgent } from './agent';
import { DroverHttpClient } from './http';

interface AgentCliOptions {
  server: string;
  token: string;
  agentId?: string;
  provider?: ProviderName;
  workdir: string;
  wait: string;
  killGrace: string;
  shutdownGrace: string;
  sessionResume: ResumePolicy;
  maxTasks?: string;
  echo?: boolean;
  logLevel: string;
}

/** The provider a command implies when none is named: `claude …` → claude-code, `opencode …` → opencode. */
export function guessProvider(command: readonly string[]): ProviderName {
  const name = basename(command[0] ?? '');
  if (name === 'claude') return 'claude-code';
  if (name === 'opencode') return 'opencode';
  return 'command';
}

function defaultAgentId(): string {
  return hostname().replace(/[^A-Za-z0-9_.-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 63) || 'agent';
}

export function registerAgentCommand(program: Command): void {
  program
    .command('agent')
    .description('the reference pull agent: dequeue tasks over HTTP and run COMMAND locally with the prompt on stdin')
    .usage('--server URL --token T [options] -- COMMAND [ARGS…]')
    .addOption(new Option('--server <url>', 'Drover API base URL').env('DROVER_SERVER').makeOptionMandatory())
    .addOption(new Option('--token <token>', "this agent's bearer token").env('DROVER_AGENT_TOKEN').makeOptionMandatory())
    .addOption(new Option('--agent-id <id>', "this agent's id (as registered)").env('DROVER_AGENT_ID'))
    .addOption(new Option('--provider <name>', 'how to read the command’s output (default: from the command name)').choices(Object.keys(PROVIDERS)))
    .option('--workdir <dir>', 'directory the command runs in', '.')
    .option('--wait <seconds>', 'long-poll wait of each dequeue', '30')
    .option('--kill-grace <duration>', 'between SIGTERM and SIGKILL when the command is stopped', '5s')
    .option('--shutdown-grace <duration>', 'after SIGINT/SIGTERM, how long a running task may finish before it is given back', '30s')
    .addOption(new Option('--session-resume <policy>', 'resume the earlier session of a task’s session key').choices(['same-instance', 'always', 'never']).default('same-instance'))
    .option('--max-tasks <n>', 'exit after this many tasks')
    .option('--echo', "copy the command's output to stderr")
    .addOption(new Option('--log-level <level>', 'log level').env('DROVER_LOG_LEVEL').default('info'))
    .argument('<command...>', 'the agent command and its arguments (after --)')
    .action(async (command: string[], opts: AgentCliOptions) => {
      const log = createLogger(opts.logLevel);
      const agentId = opts.agentId ?? defaultAgentId();
      const agent = new PullAgent({
        client: new DroverHttpClient(opts.server, opts.token, agentId),
        command,
        provider: opts.provider ?? guessProvider(command),
        workdir: resolve(opts.workdir),
        waitSeconds: Number(opts.wait),
        killGraceMs: durationMs(/^[0-9]+$/.test(opts.killGrace) ? Number(opts.killGrace) : opts.killGrace),
        shutdownGraceMs: durationMs(/^[0-9]+$/.test(opts.shutdownGrace) ? Number(opts.shutdownGrace) : opts.shutdownGrace),
        sessionResume: opts.sessionResume,
        maxTasks: opts.maxTasks !== undefined ? Number(opts.maxTasks) : undefined,
        log,
        onOutput: opts.echo ? (text) => process.stderr.write(text) : undefined,
      });
      // First signal: finish (within the grace) or give back; second: give back now.
      const onSignal = (signal: NodeJS.Signals) => {
        log.info({ signal }, 'signal received');
        agent.stop();
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      try {
        await agent.run();
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });
}
