/**
 * `deno task demo` — start a local cluster of agents on loopback with the bundled model, let
 * placement split its layers across them (memory budgets are set so no single agent can hold
 * the model), print who holds which layers, and generate text through the pipeline.
 */
import { Command, Option } from "@commander-js/extra-typings";
import { BACKEND_NAMES } from "../kernels/select.ts";
import { createClient } from "@connectrpc/connect";
import { createRpcTransport } from "../cluster/rpc/mod.ts";
import { InferenceService } from "../proto/mod.ts";
import { DEFAULT_MODEL, intOption, numberOption, writeOut } from "./common.ts";
import { formatBytes, table } from "./format.ts";
import { SAMPLING_DEFAULTS } from "../model/sampling_defaults.ts";
import {
  type LocalAgent,
  splitModelArgs,
  startLocalCluster,
  stopLocalAgents,
  waitForPlacement,
} from "./local_cluster.ts";

const CONTEXT = 512;
const SESSIONS = 4;

/** Run the demo; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const program = new Command("demo")
    .description("start a local 3-agent cluster and generate text through its pipeline")
    .option("-m, --model <path>", "GGUF model", DEFAULT_MODEL)
    .option("-p, --prompt <text>", "prompt", "Once upon a time")
    .option("-n, --max-tokens <n>", "tokens to generate", intOption(1, 4096), 96)
    .option("--agents <n>", "agents to start", intOption(1, 16), 3)
    .option("--temperature <t>", "0 = greedy", numberOption(0, 100), SAMPLING_DEFAULTS.temperature)
    .option("--seed <n>", "RNG seed", intOption(0, 2 ** 32 - 1))
    // Checked here: each agent would refuse a bad name only after the demo had started them.
    .addOption(
      new Option("--backend <name>", "compute backend for every agent")
        .choices(BACKEND_NAMES)
        .default("auto"),
    )
    .exitOverride();
  let opts;
  try {
    opts = program.parse(args, { from: "user" }).opts();
  } catch (e) {
    return (e as { exitCode?: number }).exitCode === 0 ? 0 : 2;
  }
  const say = (s: string) => console.error(s);

  // Budgets: enough that the agents together hold the model, too little for any one alone.
  let split;
  try {
    split = await splitModelArgs({
      model: opts.model,
      agents: opts.agents,
      contextSize: CONTEXT,
      maxSessions: SESSIONS,
      backend: opts.backend,
    });
  } catch (e) {
    // A missing or unreadable model is the user's to fix: one line, not a stack trace.
    say(`demo: ${(e as Error).message}`);
    return 1;
  }
  const { args: agentArgs, budget, need } = split;
  const ids = Array.from({ length: opts.agents }, (_, i) => `agent-${String.fromCharCode(97 + i)}`);
  say(
    `starting ${opts.agents} agents on 127.0.0.1, ${formatBytes(budget)} budget each ` +
      `(the model needs ${formatBytes(need)})…`,
  );
  // SIGINT or SIGTERM (a supervisor, `kill`, a CI cancel) stops the agents before the demo
  // exits: without a handler the runtime exited at once and left them running. A second
  // signal kills them and exits without waiting.
  const interrupted = new AbortController();
  let agents: LocalAgent[] = [];
  const exitCodeOf = { SIGINT: 130, SIGTERM: 143 } as const;
  const handlers = (["SIGINT", "SIGTERM"] as const).map((sig) => {
    const handler = () => {
      if (interrupted.signal.aborted) {
        for (const a of agents) {
          try {
            a.child.kill("SIGKILL");
          } catch { /* gone */ }
        }
        Deno.exit(exitCodeOf[sig]);
      }
      interrupted.abort(sig);
    };
    Deno.addSignalListener(sig, handler);
    return () => Deno.removeSignalListener(sig, handler);
  });
  const stopped = () => {
    say(`\ndemo: ${interrupted.signal.reason}: stopping the agents…`);
    return exitCodeOf[interrupted.signal.reason as keyof typeof exitCodeOf];
  };
  try {
    agents = await startLocalCluster(ids, { args: agentArgs });
  } catch (e) {
    handlers.forEach((off) => off());
    say(`demo: could not start the agents: ${(e as Error).message}`);
    return 1;
  }
  const transport = await createRpcTransport(`127.0.0.1:${agents[0].rpcPort}`);
  try {
    // The wait itself ends on the signal, its call in flight too: returning while it still
    // polled, the transport was closed under its call, and Deno's HTTP/2 layer aborted the
    // process (nghttp2's find_stream_on_goaway_func assertion) in 6 of 10 early Ctrl-Cs.
    const info = await waitForPlacement(transport, agents.length, 30_000, interrupted.signal);
    const byId = new Map(info.nodes.map((n) => [n.id, n]));
    say("\nplacement (gossip-agreed, contiguous layer ranges):");
    say(table(
      ["agent", "layers", "rpc", "backend"],
      info.placement!.stages.map((s) => {
        const node = byId.get(s.nodeId);
        return [
          s.nodeId,
          `[${s.fromLayer}, ${s.toLayer}) of ${info.placement!.totalLayers}`,
          `127.0.0.1:${node?.rpcPort ?? "?"}`,
          node?.backend ?? "",
        ];
      }),
    ));
    say("");
    const client = createClient(InferenceService, transport);
    writeOut(opts.prompt);
    let usage;
    for await (
      const m of client.generate({
        prompt: opts.prompt,
        maxTokens: opts.maxTokens,
        sampler: {
          temperature: opts.temperature,
          seed: opts.seed === undefined ? undefined : BigInt(opts.seed),
        },
      }, { signal: interrupted.signal })
    ) {
      writeOut(m.text);
      if (m.usage) usage = m.usage;
    }
    writeOut("\n");
    if (usage) {
      say(
        `\n${usage.completionTokens} tokens through ${info.placement!.stages.length} stages: ` +
          `first token after ${usage.timeToFirstTokenMs.toFixed(0)} ms, ` +
          `${usage.decodeTokensPerSecond.toFixed(1)} tokens/s`,
      );
    }
    return 0;
  } catch (e) {
    if (interrupted.signal.aborted) return stopped();
    say(`demo: ${(e as Error).message}`);
    return 1;
  } finally {
    transport.close();
    await stopLocalAgents(agents);
    handlers.forEach((off) => off());
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
