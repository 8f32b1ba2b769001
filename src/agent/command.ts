// The `drover agent` subcommand (registered by src/cli.ts).
import { readFileSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import { basename, resolve } from 'node:path';
import { type Command, Option } from 'commander';
import { durationMs } from '../config';
import { createLogger } from '../log';
import { PROVIDERS, type ProviderName } from '../providers';
import type { ResumePolicy } from '../sessions';
import { PUSH_MODES, type PushMode } from '../workspace/plan';
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
  workspaces: boolean;
  push: PushMode;
  keepFailed: string;
  gitTokenFile?: string;
  gitUsername: string;
  gitSshKeyFile?: string;
  gitKnownHostsFile?: string;
  agentGitCredentials?: boolean;
  permissionDenials: 'fail' | 'flag';
}

/** A secret from a file: refused when others may read it. */
function readSecretFile(path: string, what: string): string {
  const mode = statSync(path).mode;
  if ((mode & 0o077) !== 0) throw new Error(`${what} ${path} may be read by others (mode ${(mode & 0o777).toString(8)}): chmod 600 it`);
  return readFileSync(path, 'utf8').trim();
}

function duration(value: string): number {
  return durationMs(/^[0-9]+$/.test(value) ? Number(value) : value);
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
    .option('--no-workspaces', 'run every task in --workdir, never in a worktree of its repository')
    .addOption(new Option('--push <mode>', 'after the command: push the task branch (auto), leave it to the agent, or never').choices([...PUSH_MODES]).default('auto'))
    .option('--keep-failed <duration>', "how long a failed task's worktree is kept", '24h')
    .option('--git-token-file <path>', 'HTTP(S) remotes: a file (mode 600) holding the access token git fetches and pushes with')
    .option('--git-username <name>', 'the user name sent with the token', 'drover')
    .option('--git-ssh-key-file <path>', 'SSH remotes: a deploy key file (mode 600)')
    .option('--git-known-hosts-file <path>', "SSH remotes: the git server's known_hosts lines")
    .option('--agent-git-credentials', "give the command the same git credentials (GIT_ASKPASS / GIT_SSH), e.g. with --push agent")
    .addOption(new Option('--permission-denials <policy>', 'tool uses the agent CLI refused: fail the task, or flag them in the result').choices(['fail', 'flag']).default('fail'))
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
        killGraceMs: duration(opts.killGrace),
        shutdownGraceMs: duration(opts.shutdownGrace),
        permissionDenials: opts.permissionDenials,
        ...(opts.workspaces
          ? {
              workspaces: {
                push: opts.push,
                keepFailedMs: duration(opts.keepFailed),
                agentCredentials: opts.agentGitCredentials === true,
                credentials: {
                  username: opts.gitUsername,
                  ...(opts.gitTokenFile ? { token: readSecretFile(opts.gitTokenFile, '--git-token-file') } : {}),
                  ...(opts.gitSshKeyFile ? { sshKey: readSecretFile(opts.gitSshKeyFile, '--git-ssh-key-file') } : {}),
                  ...(opts.gitKnownHostsFile ? { knownHosts: readFileSync(opts.gitKnownHostsFile, 'utf8') } : {}),
                },
              },
            }
          : {}),
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
