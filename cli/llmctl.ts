/**
 * `llmctl` — the command-line tool of distributed-llm. One commander program; each subcommand
 * lives in cli/commands/<name>.ts.
 */
import { Command, CommanderError } from "@commander-js/extra-typings";
import { ExitCode } from "./common.ts";
import { certsCommand } from "./commands/certs.ts";
import { evalCommand } from "./commands/eval.ts";
import { generateCommand } from "./commands/generate.ts";
import { modelCommand } from "./commands/model.ts";
import { tokenizeCommand } from "./commands/tokenize.ts";
import { VERSION } from "./version.ts";

/** Build the whole program (exported so tests can inspect --help texts). */
export function buildProgram(): Command {
  const program = new Command("llmctl")
    .description("run and manage distributed-llm: generate text, inspect models, drive a cluster")
    .version(VERSION, "-V, --version")
    .showHelpAfterError();
  program.addCommand(generateCommand());
  program.addCommand(evalCommand());
  program.addCommand(tokenizeCommand());
  program.addCommand(modelCommand());
  program.addCommand(certsCommand());
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
    const err = e as Error;
    console.error(`llmctl: ${err.message ?? String(e)}`);
    if (Deno.env.get("DLLM_DEBUG")) console.error(err.stack);
    return ExitCode.failure;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
