/**
 * The scale flow's moving parts, shared by `deno task bench scale` and tests/e2e/scale_test.ts:
 * real agent processes on loopback with their own caches, a deploy from the one agent holding
 * the file, the cluster's next-token logits and greedy ids (the bench process drives the stages
 * as a head does), a greedy generation through an agent head with a `kill -9` of one stage and a
 * standby brought in, and each agent's memory.
 *
 * @example
 * ```ts
 * const c = await ScaleCluster.start({ model, budgetBytes: 2e9, dir: "/tmp/x" });
 * try {
 *   const d = await c.deploy("a", ["b", "c"]);
 *   const out = await c.evalThrough(tokens, 16);
 * } finally {
 *   await c.stop();
 * }
 * ```
 * @module
 */
import { createClient } from "@connectrpc/connect";
import { type LocalAgent, startLocalAgent, stopLocalAgents } from "../../cli/local_cluster.ts";
import { createRpcTransport, type RpcTransport } from "../../cluster/rpc/mod.ts";
import { RemoteStageLink, type SessionLink } from "../../cluster/pipeline/mod.ts";
import {
  DiscoveryService,
  type GetClusterInfoResponse,
  InferenceService,
  NodeState,
  TransferService,
  TransferState,
} from "../../proto/mod.ts";
import { argmax } from "../../model/sampler.ts";

/** One agent of the flow with an RPC transport to it. */
export interface ScaleAgent extends LocalAgent {
  transport: RpcTransport;
  cacheDir: string;
}

/** How to start the flow's agents. */
export interface ScaleClusterOptions {
  /** GGUF file the source agent holds. */
  model: string;
  /** --memory-budget of every agent, bytes. */
  budgetBytes: number;
  /** Folder for the agents' caches (removed by stop()). */
  dir: string;
  /** Stage agents; the first holds the file (default a, b, c). */
  ids?: string[];
  /**
   * Standby agents (no model until a stage dies; default ["b2"]: it sorts right after b, so
   * placement gives it the middle stage's slot).
   */
  standby?: string[];
  backend?: string;
  threads?: number;
  contextSize?: number;
  maxSessions?: number;
  /** Progress lines (stderr in the bench). */
  log?: (line: string) => void;
  /** Extra agent flags. */
  extra?: string[];
  /** Leave `dir` (the caches) in place on stop(). */
  keepDir?: boolean;
  /**
   * --gossip-preset (default local: fast failure detection for tests). The bench takes lan: on a
   * busy 2-core machine local's 100 ms probe timeout declared busy agents dead again and again.
   */
  gossipPreset?: string;
}

/** What a deploy cost: per-node bytes, rate and the time until every stage was loaded. */
export interface DeployResult {
  placement: string[];
  /** Bytes each fetching node received (the source fetches nothing). */
  bytes_fetched: Record<string, number>;
  /** Bytes each node's layers + header need (what it should fetch). */
  bytes_needed: Record<string, number>;
  file_bytes: number;
  corrupt_chunks: number;
  /** From the first chunk to the last verified byte, seconds. */
  transfer_seconds: number;
  /** All fetched bytes over transfer_seconds. */
  aggregate_MBps: number;
  /** From the deploy call to the source's plan (manifest: read + sha256 of the file). */
  manifest_seconds: number;
  /** From the deploy call to every planned stage loaded and announced. */
  deploy_to_ready_seconds: number;
  /** "stage loaded" log lines: node, layers, ms. */
  stage_loads: string[];
}

/** A finished greedy generation through an agent head. */
export interface GenerateResult {
  tokens: number[];
  time_to_first_token_ms: number;
  decode_tokens_per_second: number;
  recoveries: number;
  /** Client-side: ms from the request to each token. */
  token_ms: number[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** VmRSS and VmHWM (peak) of a process, bytes. */
export function rssOf(pid: number): { rss: number; peak: number } {
  const s = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(s)?.[1] ?? NaN) * 1024;
  return { rss: kb("VmRSS"), peak: kb("VmHWM") };
}

/** The two series of `distributed_llm_model_memory_bytes{kind}` of an agent, bytes. */
export async function modelMemoryOf(
  a: LocalAgent,
): Promise<{ weights: number; kvCache: number }> {
  const text = await (await fetch(`http://127.0.0.1:${a.metricsPort}/metrics`)).text();
  const get = (kind: string) => {
    const re = new RegExp(
      `^distributed_llm_model_memory_bytes\\{[^}]*kind="${kind}"[^}]*\\} (\\S+)`,
      "m",
    );
    const m = re.exec(text);
    return m ? Number(m[1]) : NaN;
  };
  return { weights: get("weights"), kvCache: get("kv_cache") };
}

/** Agents on loopback for the scale flow. */
export class ScaleCluster {
  readonly agents = new Map<string, ScaleAgent>();
  readonly stageLoads: string[] = [];
  /** Each agent's start-up calibration, GFLOP/s (placement weighs nodes by it). */
  readonly calibration: Record<string, number> = {};
  /** Each "request resumed" a head logged: failure → replay start, and the replay's prefill. */
  readonly resumes: { waitedMs: number; replayMs: number }[] = [];
  /** Agents killed on purpose (kill -9 of the failure check) or being stopped. */
  readonly #expectedExit = new Set<string>();
  /** Agents that exited on their own, with the reason. */
  readonly crashed = new Map<string, string>();
  #opts:
    & Required<Omit<ScaleClusterOptions, "threads" | "extra" | "keepDir" | "gossipPreset">>
    & ScaleClusterOptions;
  #t0 = performance.now();

  private constructor(opts: ScaleClusterOptions) {
    this.#opts = {
      ids: ["a", "b", "c"],
      standby: ["b2"],
      backend: "wasm",
      contextSize: 512,
      maxSessions: 2,
      log: () => {},
      ...opts,
    };
  }

  /** Progress line with seconds since start. */
  log(msg: string): void {
    this.#opts.log(`[${((performance.now() - this.#t0) / 1000).toFixed(1)} s] ${msg}`);
  }

  /** Start the source (with the file), the other stage agents and the standbys (no model). */
  static async start(opts: ScaleClusterOptions): Promise<ScaleCluster> {
    const c = new ScaleCluster(opts);
    try {
      const o = c.#opts;
      const [first, ...rest] = o.ids;
      await c.#startAgent(first, ["--model", o.model]);
      const seeds = [c.agents.get(first)!.gossipAddr];
      // One at a time: each agent's start-up calibration then has the cores, as it would on a
      // machine of its own. Started together on 2 shared cores they measured 27–78 GFLOP/s
      // against each other (best rounds), and placement gave the "fast" one 14 layers.
      for (const id of [...rest, ...o.standby]) await c.#startAgent(id, ["--no-model"], seeds);
      await c.#waitMembers(o.ids.length + o.standby.length);
      c.log(`${c.agents.size} agents up: ${[...c.agents.keys()].join(", ")}`);
      return c;
    } catch (e) {
      await c.stop().catch(() => {});
      throw e;
    }
  }

  async #startAgent(id: string, args: string[], seeds?: string[]): Promise<void> {
    const o = this.#opts;
    const cacheDir = `${o.dir}/${id}`;
    const a = await startLocalAgent({
      id,
      seeds,
      startTimeoutMs: 120_000,
      onLog: (l) => {
        if (l.msg === "stage loaded") {
          const line = `${id} loaded ${l.layers} (${l.bytes} bytes) in ${l.ms} ms` +
            (l.duringFetch ? " (as its layers arrived)" : "");
          this.stageLoads.push(line);
          this.log(line);
        } else if (l.msg === "calibrated") {
          this.calibration[id] = Number(l.gflops);
          this.log(`${id} calibrated at ${l.gflops} GFLOP/s`);
        } else if (l.msg === "request resumed after a stage failure") {
          this.resumes.push({ waitedMs: Number(l.waited_ms), replayMs: Number(l.replay_ms) });
          this.log(
            `${id} resumed on ${l.chain}: ${l.waited_ms} ms from the failure to the replay, ` +
              `${l.replayed_tokens} tokens replayed in ${l.replay_ms} ms`,
          );
        } else if (l.msg === "serving a deployed model") {
          this.log(`${id} holds its layers: serving the deployed model`);
        } else if (
          l.level === "error" || (l.level === "warn" && l.msg !== "no placement") ||
          /^member (dead|leave|suspect)/.test(String(l.msg))
        ) {
          this.log(`${id} ${l.level}: ${JSON.stringify(l).slice(0, 400)}`);
        }
      },
      args: [
        ...args,
        "--memory-budget",
        String(o.budgetBytes),
        "--backend",
        o.backend,
        ...(o.threads ? ["--threads", String(o.threads)] : []),
        "--context-size",
        String(o.contextSize),
        "--max-sessions",
        String(o.maxSessions),
        "--gossip-preset",
        o.gossipPreset ?? "local",
        "--cache-dir",
        cacheDir,
        "--log-level",
        "info",
        ...(o.extra ?? []),
      ],
    });
    a.exited.then((st) => {
      if (this.#expectedExit.has(id)) return;
      const why = `${id} exited on its own (code ${st.code}, signal ${st.signal}):\n` +
        a.stderr.slice(-30).join("\n");
      this.crashed.set(id, why);
      this.log(why);
    });
    this.agents.set(id, {
      ...a,
      cacheDir,
      transport: await createRpcTransport(`127.0.0.1:${a.rpcPort}`),
    });
  }

  /** The agent `id`. */
  agent(id: string): ScaleAgent {
    const a = this.agents.get(id);
    if (!a) throw new Error(`no agent ${id}`);
    return a;
  }

  /** The first stage agent (holds the file; the head of generations). */
  get source(): ScaleAgent {
    return this.agent(this.#opts.ids[0]);
  }

  async #waitMembers(n: number, timeoutMs = 60_000): Promise<void> {
    const d = createClient(DiscoveryService, this.source.transport);
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const info = await d.getClusterInfo({});
      if (info.nodes.filter((x) => x.state === NodeState.ALIVE).length >= n) return;
      await sleep(100);
    }
    throw new Error(`fewer than ${n} alive members after ${timeoutMs / 1000} s`);
  }

  /** The cluster view of `via` (default the source). */
  info(via = this.source): Promise<GetClusterInfoResponse> {
    return createClient(DiscoveryService, via.transport).getClusterInfo({});
  }

  /**
   * Wait until the placement's stages tile the model and every stage's node is alive and
   * announces exactly its range (loaded); returns that view.
   */
  async waitReady(
    timeoutMs: number,
    opts: { without?: string; via?: ScaleAgent } = {},
  ): Promise<GetClusterInfoResponse> {
    const deadline = Date.now() + timeoutMs;
    let last = "";
    while (Date.now() < deadline) {
      try {
        const info = await this.info(opts.via);
        const stages = info.placement?.stages ?? [];
        const total = info.placement?.totalLayers ?? 0;
        let at = 0;
        let ok = stages.length > 0;
        for (const s of stages) {
          const n = info.nodes.find((x) => x.id === s.nodeId);
          if (
            s.fromLayer !== at || s.nodeId === opts.without || n?.state !== NodeState.ALIVE ||
            n.hosted?.fromLayer !== s.fromLayer || n.hosted?.toLayer !== s.toLayer
          ) ok = false;
          at = s.toLayer;
        }
        last = stages.map((s) => `${s.nodeId}:[${s.fromLayer},${s.toLayer})`).join(" ") ||
          "no placement";
        if (ok && at === total && total > 0) return info;
      } catch (e) {
        last = (e as Error).message;
      }
      await sleep(100);
    }
    throw new Error(`no loaded placement within ${timeoutMs / 1000} s (last: ${last})`);
  }

  /**
   * `models deploy` of the source's file to `targets` (TransferService.Deploy, what llmctl
   * calls), timed until every stage is loaded.
   */
  async deploy(
    targets: string[],
    opts: { readyTimeoutMs?: number; via?: ScaleAgent } = {},
  ): Promise<DeployResult> {
    const via = opts.via ?? this.source;
    const t0 = performance.now();
    let tPlanned = 0;
    let tFirst = 0;
    let tFetched = 0;
    const fetched: Record<string, number> = {};
    const needed: Record<string, number> = {};
    let corrupt = 0;
    let placement: string[] = [];
    let lastLog = 0;
    const loadsBefore = this.stageLoads.length;
    for await (
      const m of createClient(TransferService, via.transport).deploy({
        path: this.#opts.model,
        sourceNodeId: this.source.id,
        nodes: targets,
      })
    ) {
      if (!tPlanned && m.placement) {
        tPlanned = performance.now();
        placement = m.placement.stages.map((s) => `${s.nodeId}:[${s.fromLayer},${s.toLayer})`);
        this.log(`deploy planned: ${placement.join(" ")}`);
      }
      // The deploy's targets only: nodes already serving it report their earlier fetch.
      const fetching = m.nodes.filter((n) =>
        n.nodeId !== this.source.id && targets.includes(n.nodeId)
      );
      if (!tFirst && fetching.some((n) => n.bytesReceived > 0n)) tFirst = performance.now();
      for (const n of fetching) {
        fetched[n.nodeId] = Number(n.bytesReceived);
        needed[n.nodeId] = Number(n.bytesTotal);
      }
      corrupt = m.nodes.reduce((s, n) => s + n.corruptChunks, 0);
      if (
        !tFetched && fetching.length > 0 &&
        fetching.every((n) =>
          n.bytesTotal > 0n && n.bytesDone === n.bytesTotal &&
          n.state !== TransferState.PENDING && n.state !== TransferState.FETCHING
        )
      ) tFetched = performance.now();
      if (performance.now() - lastLog > 5000) {
        lastLog = performance.now();
        this.log(
          `deploy: ${
            fetching.map((n) =>
              `${n.nodeId} ${(Number(n.bytesDone) / 1e6).toFixed(0)}/${
                (Number(n.bytesTotal) / 1e6).toFixed(0)
              } MB`
            ).join(", ")
          }`,
        );
      }
      if (m.done && !m.message.startsWith("deployed")) throw new Error(m.message);
      if (this.crashed.size) {
        throw new Error(`agents died during the deploy: ${[...this.crashed.values()].join("\n")}`);
      }
    }
    if (!tFetched) tFetched = performance.now();
    await this.waitReady(opts.readyTimeoutMs ?? 600_000, { via });
    const tReady = performance.now();
    const bytes = Object.values(fetched).reduce((s, b) => s + b, 0);
    const secs = (tFetched - (tFirst || tPlanned)) / 1000;
    return {
      placement,
      bytes_fetched: fetched,
      bytes_needed: needed,
      file_bytes: (await Deno.stat(this.#opts.model)).size,
      corrupt_chunks: corrupt,
      transfer_seconds: round(secs),
      aggregate_MBps: round(bytes / 1e6 / Math.max(secs, 1e-3), 1),
      manifest_seconds: round((tPlanned - t0) / 1000),
      deploy_to_ready_seconds: round((tReady - t0) / 1000),
      stage_loads: this.stageLoads.slice(loadsBefore),
    };
  }

  /**
   * Next-token logits after `tokens` and `nPredict` greedy ids through the current placement:
   * the bench process drives each stage over gRPC as a head does (f32 activations), asking the
   * tail for logits instead of a sampled token.
   */
  async evalThrough(
    tokens: number[],
    nPredict: number,
  ): Promise<{ logits: Float32Array; steps: Float32Array[]; greedy: number[]; stages: string[] }> {
    const info = await this.waitReady(60_000);
    const placement = info.placement!;
    const [first, ...rest] = placement.stages;
    const node = info.nodes.find((n) => n.id === first.nodeId)!;
    // As agents do between stages: activations do not compress, so no gzip on the hop.
    const t = await createRpcTransport(`127.0.0.1:${node.rpcPort}`, { gzip: false });
    let session: SessionLink | undefined;
    try {
      const link = new RemoteStageLink(first.nodeId, first.fromLayer, first.toLayer, t);
      // No sampling: the tail answers the logits, which come back along the chain.
      session = await link.openSession({
        sessionId: crypto.randomUUID(),
        maxContext: this.#opts.contextSize,
        model: placement.model,
        epoch: 0n,
        downstream: rest.map((s) => ({ nodeId: s.nodeId, from: s.fromLayer, to: s.toLayer })),
      });
      const pass = async (ids: number[]): Promise<Float32Array> => {
        const out = await session!.step({ tokens: Int32Array.from(ids) });
        if (out.kind !== "logits") throw new Error(`the chain answered ${out.kind}, not logits`);
        return out.logits;
      };
      const logits0 = await pass(tokens);
      const greedy: number[] = [];
      const steps: Float32Array[] = [];
      let logits = logits0;
      for (let i = 0; i < nPredict; i++) {
        const id = argmax(logits);
        greedy.push(id);
        steps.push(logits);
        if (i + 1 < nPredict) logits = await pass([id]);
      }
      return {
        logits: logits0,
        steps,
        greedy,
        stages: placement.stages.map((s) => `${s.nodeId}:[${s.fromLayer},${s.toLayer})`),
      };
    } finally {
      await session?.close("eval done");
      t.close();
    }
  }

  /**
   * Greedy generation of `maxTokens` through `head` (InferenceService.Generate);
   * `onToken(i)` is called as each token arrives (the failure check kills a stage there).
   */
  async generate(
    prompt: string,
    maxTokens: number,
    opts: { head?: ScaleAgent; onToken?: (i: number) => void } = {},
  ): Promise<GenerateResult> {
    const head = opts.head ?? this.source;
    const client = createClient(InferenceService, head.transport);
    const t0 = performance.now();
    const tokens: number[] = [];
    const tokenMs: number[] = [];
    let usage;
    for await (
      const m of client.generate(
        { prompt, maxTokens, sampler: { temperature: 0 } },
        { timeoutMs: 3_600_000 },
      )
    ) {
      if (m.finishReason) {
        usage = m.usage;
        break;
      }
      tokens.push(m.tokenId);
      tokenMs.push(performance.now() - t0);
      opts.onToken?.(tokens.length);
    }
    return {
      tokens,
      time_to_first_token_ms: round(usage?.timeToFirstTokenMs ?? tokenMs[0] ?? NaN, 1),
      decode_tokens_per_second: round(usage?.decodeTokensPerSecond ?? NaN, 3),
      recoveries: usage?.recoveries ?? 0,
      token_ms: tokenMs.map((x) => round(x, 1)),
    };
  }

  /**
   * kill -9 of `victim` when the generation reaches token `atToken`; once the head's gossip
   * no longer counts it alive, `models deploy` to the standby brings it in (it fetches the
   * victim's layers from peers). Returns the generation and the recovery timings.
   */
  async killDuring(
    prompt: string,
    maxTokens: number,
    victim: string,
    atToken: number,
    standby: string,
  ) {
    const v = this.agent(victim);
    let tKill = 0;
    let standbyDeploy: Promise<DeployResult> | undefined;
    const d = createClient(DiscoveryService, this.source.transport);
    const bringStandby = async () => {
      // The standby joins once gossip has declared the victim dead (a plan that still counts
      // it would give it layers again).
      for (let i = 0; i < 600; i++) {
        const info = await d.getClusterInfo({});
        const n = info.nodes.find((x) => x.id === victim);
        if (!n || n.state !== NodeState.ALIVE) break;
        await sleep(50);
      }
      this.log(`${victim} no longer alive in ${this.source.id}'s view; deploying to ${standby}`);
      return await this.deploy([standby], { readyTimeoutMs: 300_000 });
    };
    let afterRecovery: Promise<Awaited<ReturnType<ScaleCluster["memory"]>>> | undefined;
    const gen = await this.generate(prompt, maxTokens, {
      onToken: (i) => {
        // The standby's KV gauge while the resumed session is open (after it, the KV is freed).
        if (i === atToken + 2) afterRecovery = this.memory();
        if (i === atToken) {
          tKill = performance.now();
          this.#expectedExit.add(victim);
          v.child.kill("SIGKILL");
          this.log(`kill -9 ${victim} at token ${i}`);
          standbyDeploy = bringStandby();
          // Awaited below; a generation that fails first must not leave it unhandled.
          standbyDeploy.catch(() => {});
        }
      },
    });
    const standbyResult = standbyDeploy ? await standbyDeploy : undefined;
    const killAt = gen.token_ms[atToken - 1];
    const nextAt = gen.token_ms[atToken];
    const resumed = this.resumes.at(-1);
    return {
      generation: gen,
      killed_at_ms: round(tKill ? killAt : NaN, 1),
      recovery_seconds: round((nextAt - killAt) / 1000),
      // What the recovery consists of, as the head saw it (the rest is the token's last hop).
      until_replay_seconds: round((resumed?.waitedMs ?? NaN) / 1000),
      replay_seconds: round((resumed?.replayMs ?? NaN) / 1000),
      standby_deploy: standbyResult,
      /** Every agent's memory two tokens after the recovery. */
      memory_after_recovery: await afterRecovery,
    };
  }

  /** RSS, peak RSS and the agent's own weights / KV gauge, per agent still running. */
  async memory(): Promise<
    Record<string, { rss: number; peak: number; weights: number; kv: number }>
  > {
    const out: Record<string, { rss: number; peak: number; weights: number; kv: number }> = {};
    for (const [id, a] of this.agents) {
      try {
        const r = rssOf(a.child.pid);
        const m = await modelMemoryOf(a);
        out[id] = { ...r, weights: m.weights, kv: m.kvCache };
      } catch {
        // killed
      }
    }
    return out;
  }

  /**
   * Start a new peak-RSS window for every agent still running (Linux `clear_refs` 5 resets
   * VmHWM), so each phase's peak can be read on its own.
   */
  resetPeaks(): void {
    for (const a of this.agents.values()) {
      try {
        Deno.writeTextFileSync(`/proc/${a.child.pid}/clear_refs`, "5");
      } catch {
        // killed, or not Linux
      }
    }
  }

  /** Stop every agent (SIGTERM, then SIGKILL) and remove the caches. */
  async stop(): Promise<void> {
    const all = [...this.agents.values()];
    for (const a of all) {
      this.#expectedExit.add(a.id);
      a.transport.close();
    }
    try {
      await stopLocalAgents(all, 10_000);
    } finally {
      if (!this.#opts.keepDir) {
        await Deno.remove(this.#opts.dir, { recursive: true }).catch(() => {});
      }
    }
  }
}

function round(x: number, d = 2): number {
  return Math.round(x * 10 ** d) / 10 ** d;
}
