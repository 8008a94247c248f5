/** `llmctl version`: llmctl's version, the runtime's, and (with --endpoint) the agent's. */
import { Command } from "@commander-js/extra-typings";
import { CliError, connect, endpointGiven, type GlobalOptions } from "../client.ts";
import { printJson } from "../common.ts";
import { VERSION } from "../version.ts";

/** Build the `version` command. */
export function versionCommand() {
  return new Command("version")
    .description("print llmctl's version (and the agent's, when --endpoint is given)")
    .option("--json", "print one JSON object")
    .action(async (opts, cmd) => {
      const g = cmd.optsWithGlobals() as GlobalOptions;
      let agent: { node: string; version: string } | { error: string } | null = null;
      let failed: CliError | undefined;
      if (endpointGiven(g)) {
        const c = await connect(g);
        try {
          const h = await c.call((a) => a.node.healthCheck({}, a.callOptions));
          agent = { node: h.nodeId, version: h.version };
        } catch (e) {
          agent = { error: (e as Error).message };
          failed = e instanceof CliError ? e : new CliError((e as Error).message);
        } finally {
          c.close();
        }
      }
      const info = {
        llmctl: VERSION,
        deno: Deno.version.deno,
        v8: Deno.version.v8,
        typescript: Deno.version.typescript,
        agent,
      };
      if (opts.json) printJson(info);
      else {
        console.log(`llmctl ${VERSION} (deno ${Deno.version.deno})`);
        if (agent && !("error" in agent)) console.log(`agent ${agent.node}: ${agent.version}`);
      }
      // The agent asked about did not answer: llmctl's own version is printed, and the exit
      // code says so (it was 0), with the reason on stderr.
      if (failed) throw failed;
    });
}
