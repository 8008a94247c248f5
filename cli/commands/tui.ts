/** `llmctl tui`: the interactive terminal UI, live from ClusterService.StreamUpdates. */
import { Command } from "@commander-js/extra-typings";
import { CliError, connect, type GlobalOptions } from "../client.ts";
import { ExitCode } from "../common.ts";

/** Build the `tui` command. */
export function tuiCommand() {
  return new Command("tui")
    .description(
      "interactive terminal UI: cluster topology, nodes, models, inference and events, live",
    )
    .option("--no-glitch", "no glitch effects (also off under NO_COLOR)")
    .option("--no-boot", "skip the boot sequence")
    .addHelpText(
      "after",
      `
Keys: tab/shift-tab switch tabs, ↑/↓ or j/k select, enter opens (on Inference: edit the
prompt, enter sends), / filters, ? help, g toggles glitches, 1-5 glitch intensity, G fires one,
q or Ctrl-C quits. Needs a terminal of at least 80×24.`,
    )
    .action(async (opts, cmd) => {
      if (!Deno.stdin.isTerminal() || !Deno.stdout.isTerminal()) {
        throw new CliError(
          "llmctl tui needs an interactive terminal; for scripts use `llmctl cluster status --json`",
          ExitCode.usage,
        );
      }
      const g = cmd.optsWithGlobals() as GlobalOptions;
      const { runTui } = await import("../tui/app.ts");
      const agent = await connect(g);
      try {
        await runTui(agent, {
          glitch: opts.glitch && !Deno.env.get("NO_COLOR"),
          color: !Deno.env.get("NO_COLOR"),
          boot: opts.boot,
        });
      } finally {
        agent.close();
      }
    });
}
