/**
 * Transfer benchmark: deploy a generated ~500 MB F32 llama from one agent that holds the file to
 * 3 agents on loopback (each fetches about a third: its layers), and report the transfer rate.
 *
 * ```sh
 * deno task bench transfer                 # 11 layers × n_embd 1024 ≈ 517 MB
 * deno task bench transfer --layers 4      # smaller
 * ```
 *
 * Prints one JSON object: bytes fetched by all agents, the wall time from the plan to every
 * agent holding its verified bytes, the aggregate MB/s, and as the reference measured in the
 * same run, the source's own read+sha256 rate while computing the manifest. `BENCH_VERBOSE=1`
 * prints the agents' log lines (stderr) with milliseconds since start.
 * @module
 */
import { Command } from "@commander-js/extra-typings";
import { createClient } from "@connectrpc/connect";
import { type LocalAgent, startLocalAgent, stopLocalAgents } from "../cli/local_cluster.ts";
import { createRpcTransport } from "../cluster/rpc/mod.ts";
import { DiscoveryService, NodeState, TransferService, TransferState } from "../proto/mod.ts";
import { CACHE_DIR } from "./lib/models.ts";
import { writeSyntheticLlama } from "./lib/synthetic.ts";

const opts = new Command("bench transfer")
  .option("--layers <n>", "layers of the generated model (11 ≈ 517 MB)", "11")
  .option("--embd <n>", "embedding width", "1024")
  .option("--budget <size>", "memory budget of each fetching agent", "220MB")
  .parse(Deno.args, { from: "user" })
  .opts();

const layers = Number(opts.layers);
const embd = Number(opts.embd);
await Deno.mkdir(`${CACHE_DIR}models`, { recursive: true });
const model = `${CACHE_DIR}models/transfer-l${layers}-e${embd}.gguf`;
try {
  await Deno.stat(model);
} catch {
  console.error(`generating ${model} …`);
  await writeSyntheticLlama(`${model}.tmp`, { nEmbd: embd, nLayers: layers });
  await Deno.rename(`${model}.tmp`, model);
}
const fileSize = (await Deno.stat(model)).size;
const tmp = await Deno.makeTempDir({ prefix: "dllm-bench-transfer-" });
const base = ["--gossip-preset", "local", "--backend", "reference", "--context-size", "256"];
const agents: LocalAgent[] = [];
const t00 = performance.now();
const notes: string[] = [];
const onLog = (id: string) => (l: Record<string, unknown>) => {
  if (l.level === "debug" && !String(l.msg).startsWith("member")) return;
  if (Deno.env.get("BENCH_VERBOSE")) {
    console.error(Math.round(performance.now() - t00), id, JSON.stringify(l).slice(0, 300));
  }
  if (l.msg === "stage loaded") notes.push(`${id} loaded ${l.layers} in ${l.ms} ms`);
};
try {
  agents.push(
    await startLocalAgent({
      id: "src",
      onLog: onLog("src"),
      args: [...base, "--model", model, "--memory-budget", "1MB", "--cache-dir", `${tmp}/src`],
    }),
  );
  agents.push(
    ...await Promise.all(["a", "b", "c"].map((id) =>
      startLocalAgent({
        id,
        onLog: onLog(id),
        seeds: [agents[0].gossipAddr],
        args: [
          ...base,
          "--no-model",
          "--memory-budget",
          opts.budget,
          "--cache-dir",
          `${tmp}/${id}`,
        ],
      })
    )),
  );
  const transport = await createRpcTransport(`127.0.0.1:${agents[1].rpcPort}`);
  const discovery = createClient(DiscoveryService, transport);
  for (let i = 0; i < 200; i++) {
    const info = await discovery.getClusterInfo({});
    if (info.nodes.filter((n) => n.state === NodeState.ALIVE).length === 4) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const t0 = performance.now();
  let tPlanned = 0;
  let tFetched = 0;
  let bytes = 0;
  let corrupt = 0;
  let stages = "";
  for await (
    const m of createClient(TransferService, transport).deploy({
      path: model,
      sourceNodeId: "src",
      nodes: ["a", "b", "c"],
    })
  ) {
    if (!tPlanned && m.placement) {
      tPlanned = performance.now();
      stages = m.placement.stages.map((s) => `${s.nodeId}:[${s.fromLayer},${s.toLayer})`).join(
        " ",
      );
    }
    if (
      !tFetched && m.nodes.length >= 3 &&
      m.nodes.filter((n) => n.nodeId !== "src").every((n) =>
        n.bytesTotal > 0n && n.bytesDone === n.bytesTotal &&
        n.state !== TransferState.PENDING && n.state !== TransferState.FETCHING
      )
    ) {
      tFetched = performance.now();
      bytes = m.nodes.reduce((s, n) => s + Number(n.bytesReceived), 0);
      corrupt = m.nodes.reduce((s, n) => s + n.corruptChunks, 0);
    }
    if (m.done && !m.message.startsWith("deployed")) throw new Error(m.message);
  }
  const tDone = performance.now();
  transport.close();
  const secs = (tFetched - tPlanned) / 1000;
  const manifestSecs = (tPlanned - t0) / 1000;
  console.log(JSON.stringify({
    bench: "transfer",
    model: model.split("/").pop(),
    file_bytes: fileSize,
    agents: 3,
    placement: stages,
    bytes_fetched: bytes,
    corrupt_chunks: corrupt,
    transfer_seconds: Math.round(secs * 100) / 100,
    transfer_MBps: Math.round(bytes / 1e6 / secs),
    deploy_seconds_total: Math.round((tDone - t0) / 10) / 100,
    stage_loads: notes,
    reference: {
      what: "source read + sha256 of the whole file (manifest) plus header fetch and plan",
      seconds: Math.round(manifestSecs * 100) / 100,
      MBps: Math.round(fileSize / 1e6 / manifestSecs),
    },
  }));
} finally {
  await stopLocalAgents(agents);
  await Deno.remove(tmp, { recursive: true });
}
