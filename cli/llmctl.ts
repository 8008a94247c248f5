/**
 * `llmctl` — the command-line tool of distributed-llm. One commander program; each subcommand
 * lives in cli/commands/<name>.ts. Exit codes: 0 ok, 1 failure, 2 usage, 3 agent unreachable
 * (see docs/llmctl.md).
 */
import { Command, CommanderError } from "@commander-js/extra-typings";
import { CliError, globalOptions } from "./client.ts";
import { ExitCode, Interrupted } from "./common.ts";
import { boundMessage } from "../cluster/rpc/mod.ts";
import { CertsError } from "../cluster/tls/mod.ts";
import { benchCommand } from "./commands/bench.ts";
import { certsCommand } from "./commands/certs.ts";
import { chatCommand } from "./commands/chat.ts";
import { clusterCommand } from "./commands/cluster.ts";
import { completionsCommand } from "./commands/completions.ts";
import { evalCommand } from "./commands/eval.ts";
import { generateCommand } from "./commands/generate.ts";
import { modelsCommand } from "./commands/models.ts";
import { nodesCommand } from "./commands/nodes.ts";
import { tokenizeCommand } from "./commands/tokenize.ts";
import { tuiCommand } from "./commands/tui.ts";
import { versionCommand } from "./commands/version.ts";
import { VERSION } from "./version.ts";

/** Build the whole program (exported so tests can inspect --help texts). */
export function buildProgram(): Command {
  const program = new Command("llmctl")
    .description("run and manage distributed-llm: generate text, inspect models, drive a cluster")
    .version(VERSION, "-V, --version")
    .showHelpAfterError();
  for (const o of globalOptions()) program.addOption(o);
  program.addHelpText(
    "after",
    `
Examples:
  llmctl cluster status                      # the cluster as the agent at --endpoint sees it
  llmctl nodes list --json
  llmctl generate -p "Once upon a time"      # local model; add --endpoint for the cluster
  llmctl tui                                 # live terminal UI

Exit codes: 0 ok, 1 failure, 2 usage error, 3 no agent reachable at the endpoint.`,
  );
  program.addCommand(clusterCommand());
  program.addCommand(nodesCommand());
  program.addCommand(modelsCommand());
  program.addCommand(generateCommand());
  program.addCommand(chatCommand());
  program.addCommand(tuiCommand());
  program.addCommand(evalCommand());
  program.addCommand(tokenizeCommand());
  program.addCommand(benchCommand());
  program.addCommand(certsCommand());
  program.addCommand(completionsCommand(() => program as unknown as Command));
  program.addCommand(versionCommand());
  // addCommand() does not pass settings down, so make every (sub)command throw instead of
  // exiting: main() maps errors to documented exit codes.
  const configure = (cmd: Command) => {
    cmd.exitOverride().showHelpAfterError("(run with --help for usage)");
    for (const sub of cmd.commands as Command[]) configure(sub);
  };
  configure(program as unknown as Command);
  return program as unknown as Command;
}

/** Run llmctl with `args`, returning the exit code. */
export async function main(args: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(args, { from: "user" });
    return ExitCode.ok;
  } catch (e) {
    if (e instanceof CommanderError) {
      // commander already printed the message; help/version exit with code 0.
      return e.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
    }
    if (e instanceof Interrupted) return ExitCode.interrupted;
    if (e instanceof CliError) {
      console.error(`llmctl: ${boundMessage(e.message)}`);
      return e.exitCode;
    }
    if (e instanceof CertsError) {
      console.error(`llmctl: ${boundMessage(e.message)}`);
      return e.usage ? ExitCode.usage : ExitCode.failure;
    }
    const err = e as Error;
    console.error(`llmctl: ${boundMessage(err.message ?? String(e))}`);
    if (Deno.env.get("DLLM_DEBUG")) console.error(err.stack);
    return ExitCode.failure;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
