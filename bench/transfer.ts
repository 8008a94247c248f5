/**
 * Transfer benchmark: deploy a model from one agent that holds the file to 3 agents on loopback
 * (each fetches about a third: the header and its layers' tensors), and report the transfer rate
 * and what the fetch left in each agent's memory.
 *
 * ```sh
 * deno task bench transfer                          # generated F32, 11 layers × 1024 ≈ 517 MB
 * deno task bench transfer --layers 4               # smaller
 * deno task bench transfer --model 1b_q8_0          # the 1.17 GB TinyLlama-shaped Q8_0 model
 * deno task bench transfer --model path/to/x.gguf --budget 2GB
 * ```
 *
 * Prints one JSON object: bytes fetched by all agents, the wall time from the plan to every
 * agent holding its verified bytes, the aggregate MB/s, the CPU seconds each agent spent in that
 * time, each agent's RSS before the deploy, when its bytes were fetched, at the end, 2 s later
 * (settled) and at its peak, with its weights + KV cache and what the settled RSS holds beyond
 * them and the idle RSS, and as the reference measured in the same run, the source's own
 * read+sha256 rate while computing the manifest.
 * `BENCH_VERBOSE=1` prints the agents' log lines (stderr) with milliseconds since start.
 * @module
 */
import { Command } from "@commander-js/extra-typings";
import { createClient } from "@connectrpc/connect";
import { type LocalAgent, startLocalAgent, stopLocalAgents } from "../cli/local_cluster.ts";
import { createRpcTransport } from "../cluster/rpc/mod.ts";
import { DiscoveryService, NodeState, TransferService, TransferState } from "../proto/mod.ts";
import { CACHE_DIR, GENERATED_LARGE, type GeneratedModel, generatedModel } from "./lib/models.ts";
import { modelMemoryOf } from "./lib/scale_cluster.ts";
import { writeSyntheticLlama } from "./lib/synthetic.ts";

const opts = new Command("bench transfer")
  .option("--layers <n>", "layers of the generated F32 model (11 ≈ 517 MB)", "11")
  .option("--embd <n>", "embedding width of the generated F32 model", "1024")
  .option(
    "--model <name|path>",
    `a bench model (${GENERATED_LARGE.join(", ")}) or a GGUF path instead of the F32 model`,
  )
  .option("--budget <size>", "memory budget of each fetching agent (default: 40% of the file)")
  .parse(Deno.args, { from: "user" })
  .opts();

/** The model file to deploy: a named bench model, a path, or the generated F32 llama. */
async function modelPath(): Promise<string> {
  if (opts.model) {
    return (GENERATED_LARGE as readonly string[]).includes(opts.model)
      ? await generatedModel(opts.model as GeneratedModel)
      : opts.model;
  }
  const layers = Number(opts.layers);
  const embd = Number(opts.embd);
  await Deno.mkdir(`${CACHE_DIR}models`, { recursive: true });
  const path = `${CACHE_DIR}models/transfer-l${layers}-e${embd}.gguf`;
  try {
    await Deno.stat(path);
  } catch {
    console.error(`generating ${path} …`);
    await writeSyntheticLlama(`${path}.tmp`, { nEmbd: embd, nLayers: layers });
    await Deno.rename(`${path}.tmp`, path);
  }
  return path;
}

/** Resident and peak resident bytes of a process (Linux /proc), or zeros elsewhere. */
function rss(pid: number): { rss: number; peak: number } {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const kb = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
    return { rss: kb("VmRSS") * 1024, peak: kb("VmHWM") * 1024 };
  } catch {
    return { rss: 0, peak: 0 };
  }
}

/** CPU seconds (user + system) a process has used, from /proc; 0 elsewhere. */
function cpuSeconds(pid: number): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
  } catch {
    return 0;
  }
}

const MB = (b: number) => Math.round(b / 1e6);
const model = await modelPath();
const fileSize = (await Deno.stat(model)).size;
const budget = opts.budget ?? `${Math.ceil(fileSize * 0.4 / 1e6) + 60}MB`;
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
        args: [...base, "--no-model", "--memory-budget", budget, "--cache-dir", `${tmp}/${id}`],
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
  const memory: Record<string, Record<string, number>> = {};
  const sample = (what: string) => {
    for (const a of agents) (memory[a.id] ??= {})[`${what}_MB`] = MB(rss(a.child.pid).rss);
  };
  let cpu0: Record<string, number> = {};
  const cpu: Record<string, number> = {};
  sample("rss_idle");
  const t0 = performance.now();
  let tPlanned = 0;
  let tFetched = 0;
  let bytes = 0;
  let corrupt = 0;
  let stages = "";
  const needed: Record<string, number> = {};
  // An agent that dies (issue 17 saw SIGSEGV in Deno's HTTP/2 while fetching) ends the run
  // with its exit signal and last lines instead of leaving the deploy waiting for it.
  const died = new AbortController();
  for (const a of agents) {
    a.exited.then((st) => {
      if (died.signal.aborted) return;
      died.abort(
        new Error(
          `agent ${a.id} exited (code ${st.code}, signal ${st.signal ?? "none"}) during the ` +
            `deploy; its last lines:\n${a.stderr.slice(-5).join("\n")}`,
        ),
      );
    });
  }
  const deploy = createClient(TransferService, transport).deploy({
    path: model,
    sourceNodeId: "src",
    nodes: ["a", "b", "c"],
  }, { signal: died.signal });
  try {
    for await (const m of deploy) {
      if (!tPlanned && m.placement) {
        tPlanned = performance.now();
        cpu0 = Object.fromEntries(agents.map((a) => [a.id, cpuSeconds(a.child.pid)]));
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
        sample("rss_fetched");
        for (const a of agents) {
          cpu[a.id] = Math.round((cpuSeconds(a.child.pid) - cpu0[a.id]) * 100) / 100;
        }
        bytes = m.nodes.reduce((s, n) => s + Number(n.bytesReceived), 0);
        corrupt = m.nodes.reduce((s, n) => s + n.corruptChunks, 0);
        for (const n of m.nodes) if (n.nodeId !== "src") needed[n.nodeId] = Number(n.bytesTotal);
      }
      if (m.done && !m.message.startsWith("deployed")) throw new Error(m.message);
    }
  } catch (e) {
    throw died.signal.aborted ? died.signal.reason : e;
  }
  if (died.signal.aborted) throw died.signal.reason;
  died.abort(); // the agents stop at the end of the run: not a death
  const tDone = performance.now();
  transport.close();
  sample("rss_done");
  // Transfers hand their buffers back once quiet for 1 s; what stays is the stage.
  await new Promise((r) => setTimeout(r, 2000));
  sample("rss_settled");
  for (const a of agents) {
    const m = memory[a.id];
    m.rss_peak_MB = MB(rss(a.child.pid).peak);
    const { weights, kvCache } = await modelMemoryOf(a).catch(() => ({ weights: 0, kvCache: 0 }));
    m.weights_kv_MB = MB((weights || 0) + (kvCache || 0));
    m.settled_over_idle_weights_kv_MB = m.rss_settled_MB - m.rss_idle_MB - m.weights_kv_MB;
  }
  const secs = (tFetched - tPlanned) / 1000;
  const manifestSecs = (tPlanned - t0) / 1000;
  console.log(JSON.stringify({
    bench: "transfer",
    model: model.split("/").pop(),
    file_bytes: fileSize,
    agents: 3,
    budget,
    placement: stages,
    bytes_fetched: bytes,
    bytes_needed: needed,
    corrupt_chunks: corrupt,
    transfer_seconds: Math.round(secs * 100) / 100,
    transfer_MBps: Math.round(bytes / 1e6 / secs),
    deploy_seconds_total: Math.round((tDone - t0) / 10) / 100,
    stage_loads: notes,
    memory,
    // From the plan to every agent holding its bytes (the transfer_seconds window). Unlike
    // MB/s it hardly moves with other processes' load on a shared machine.
    cpu_seconds_transfer: cpu,
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
