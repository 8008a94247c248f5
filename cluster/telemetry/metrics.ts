/**
 * The agent's Prometheus metrics: one prom-client registry per agent with process defaults and
 * the `distributed_llm_*` families that k8s/ (KEDA, alerts, the Grafana dashboard) reads.
 *
 * Event metrics (tokens, request and stage-step latencies, activation bytes) are fed by hooks the
 * agent calls; state metrics (CPU, memory, layers, sessions, gossip) are read from a
 * {@linkcode MetricsSource} when Prometheus scrapes. Every label has a small fixed set of values.
 *
 * @module
 */
import os from "node:os";
import client from "prom-client";

/** Every metric name the agent exports besides the process defaults (DESIGN.md "Names users see"). */
export const METRIC_NAMES = {
  cpuPercent: "distributed_llm_node_cpu_percent",
  memoryPercent: "distributed_llm_node_memory_percent",
  layersHosted: "distributed_llm_layers_hosted",
  tokensGenerated: "distributed_llm_tokens_generated_total",
  requestsActive: "distributed_llm_requests_active",
  queueDepth: "distributed_llm_queue_depth",
  inferenceDuration: "distributed_llm_inference_duration_seconds",
  stageForwardDuration: "distributed_llm_stage_forward_duration_seconds",
  stagePassRows: "distributed_llm_stage_pass_rows",
  stagePassSequences: "distributed_llm_stage_pass_sequences",
  activationBytes: "distributed_llm_activation_bytes_total",
  gossipMembers: "distributed_llm_gossip_members",
  gossipProbeRtt: "distributed_llm_gossip_probe_rtt_seconds",
  gossipPacketsDropped: "distributed_llm_gossip_packets_dropped_total",
  modelLoad: "distributed_llm_model_load_seconds",
  kvCacheSlots: "distributed_llm_kv_cache_slots",
  modelMemory: "distributed_llm_model_memory_bytes",
  backendInfo: "distributed_llm_node_backend_info",
  replicaTokens: "distributed_llm_replica_tokens_generated_total",
  replicaRequests: "distributed_llm_replica_requests_total",
  replicaPrefixRoutes: "distributed_llm_replica_prefix_routes_total",
  replicaSessions: "distributed_llm_replica_sessions",
  recoveryDuration: "distributed_llm_recovery_duration_seconds",
  prefixCacheBytes: "distributed_llm_prefix_cache_bytes",
  prefixCacheTokens: "distributed_llm_prefix_cache_tokens_total",
  prefixCacheEvictions: "distributed_llm_prefix_cache_evictions_total",
  tokensRepliedDirect: "distributed_llm_tokens_replied_direct_total",
  forwardedRequests: "distributed_llm_forwarded_requests_total",
  stageSessionsRefused: "distributed_llm_stage_sessions_refused_total",
} as const;

/** Gossip member states, the values of `gossip_members{state}`. */
export const MEMBER_STATES = ["alive", "suspect", "dead", "left"] as const;

/** State the agent exposes to a scrape; every function is cheap and never throws. */
export interface MetricsSource {
  /** Layers of the stage this agent hosts now (0 when none). */
  layersHosted(): number;
  /** Generate requests this agent is head of right now. */
  requestsActive(): number;
  /** Requests queued for a generation slot plus stage frames waiting for / in the current pass. */
  queueDepth(): number;
  /** KV cache slots (sessions) in use and free on the hosted stage. */
  kvCacheSlots(): { used: number; free: number };
  /** Bytes of the hosted weights and of the open sessions' KV caches. */
  modelMemory?(): { weights: number; kvCache: number };
  /** Members this agent knows, by state. */
  gossipMembers(): Partial<Record<(typeof MEMBER_STATES)[number], number>>;
  /** Smoothed round trip of gossip probes, milliseconds (0 before the first ack). */
  gossipProbeRttMs(): number;
  /** Cumulative dropped gossip packets by reason. */
  gossipDropped(): Record<string, number>;
  /** The compute backend in use, its device, and why it was chosen (one series, value 1). */
  backendInfo?(): { backend: string; adapter: string; reason: string };
  /** Sessions open on each replica of the plan (its first stage's gossip figure), by replica id. */
  replicaSessions?(): Record<string, number>;
  /**
   * The hosted stage's prefix cache (cumulative since that stage loaded; undefined: none): bytes
   * held, prompt tokens looked up and restored, blocks evicted.
   */
  prefixCache?():
    | { bytes: number; lookupTokens: number; hitTokens: number; evictions: number }
    | undefined;
  /** Tokens this agent, as a tail, sent straight to their heads (cumulative). */
  tokensRepliedDirect?(): number;
  /**
   * Sessions the hosted stage refused as busy, by reason (cumulative since that stage loaded;
   * undefined: no stage): `sessions` (--max-sessions), `kv_bytes` (the budget's KV room),
   * `memory` (an allocation failed).
   */
  sessionRefusals?(): Readonly<Record<string, number>> | undefined;
}

/** Bucket bounds of a whole request (seconds): from a few tokens on a toy model to minutes. */
const REQUEST_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
/** Bucket bounds of one stage step (seconds): a decode step on a small range to a long prefill. */
const STEP_BUCKETS = [
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
];

/** Machine-wide CPU busy share since the previous call, from `os.cpus()` tick counters. */
class CpuMeter {
  private last = CpuMeter.ticks();
  private value = 0;

  private static ticks(): { busy: number; total: number } {
    let busy = 0, total = 0;
    for (const c of os.cpus()) {
      const t = c.times;
      const all = t.user + t.nice + t.sys + t.idle + t.irq;
      total += all;
      busy += all - t.idle;
    }
    return { busy, total };
  }

  /** Percent busy over the interval since the last reading (the last value if too short). */
  percent(): number {
    const now = CpuMeter.ticks();
    const dt = now.total - this.last.total;
    if (dt > 0) {
      this.value = Math.min(100, Math.max(0, (100 * (now.busy - this.last.busy)) / dt));
      this.last = now;
    }
    return this.value;
  }
}

/**
 * The metrics of one agent.
 *
 * @example
 * ```ts
 * const metrics = new AgentMetrics(source);
 * metrics.onToken();
 * console.log(await metrics.registry.metrics());
 * ```
 */
export class AgentMetrics {
  /** The registry `/metrics` serves. */
  readonly registry: client.Registry = new client.Registry();
  private readonly tokens: client.Counter;
  private readonly inference: client.Histogram;
  private readonly stageForward: client.Histogram<"phase">;
  private readonly passRows: client.Histogram;
  private readonly passSequences: client.Histogram;
  private readonly activationBytes: client.Counter<"direction">;
  private readonly modelLoad: client.Gauge;
  private readonly replicaTokens: client.Counter<"replica">;
  private readonly replicaRequests: client.Counter<"replica">;
  private readonly replicaPrefixRoutes: client.Counter<"replica">;
  private readonly recovery: client.Histogram<"part">;
  private readonly forwarded: client.Counter<"api">;

  /** Register every family on a fresh registry; state metrics read `source` on each scrape. */
  constructor(source: MetricsSource, labels: Record<string, string> = {}) {
    const registers = [this.registry];
    this.registry.setDefaultLabels(labels);
    client.collectDefaultMetrics({ register: this.registry });
    const cpu = new CpuMeter();
    const gauge = (name: string, help: string, read: () => number) =>
      new client.Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read());
        },
      });
    gauge(
      METRIC_NAMES.cpuPercent,
      "Machine CPU busy percent since the previous scrape.",
      () => cpu.percent(),
    );
    gauge(METRIC_NAMES.memoryPercent, "Machine memory in use, percent of total.", () => {
      const m = Deno.systemMemoryInfo();
      return m.total > 0 ? (100 * (m.total - m.available)) / m.total : 0;
    });
    gauge(
      METRIC_NAMES.layersHosted,
      "Transformer layers this agent hosts.",
      () => source.layersHosted(),
    );
    gauge(
      METRIC_NAMES.requestsActive,
      "Generate requests this agent is head of.",
      () => source.requestsActive(),
    );
    gauge(
      METRIC_NAMES.queueDepth,
      "Work waiting on this agent: requests queued for a generation slot plus stage frames " +
        "waiting for (or in) the current batched pass.",
      () => source.queueDepth(),
    );
    gauge(
      METRIC_NAMES.gossipProbeRtt,
      "Smoothed round trip of gossip probes to other members, seconds.",
      () => source.gossipProbeRttMs() / 1000,
    );
    new client.Gauge({
      name: METRIC_NAMES.kvCacheSlots,
      help: "KV cache slots (sessions) of the hosted stage, by state.",
      labelNames: ["state"],
      registers,
      collect() {
        const s = source.kvCacheSlots();
        this.set({ state: "used" }, s.used);
        this.set({ state: "free" }, s.free);
      },
    });
    new client.Gauge({
      name: METRIC_NAMES.modelMemory,
      help: "Bytes the hosted stage's weights and open KV caches take (compare with " +
        "process_resident_memory_bytes for the runtime's own share).",
      labelNames: ["kind"],
      registers,
      collect() {
        const m = source.modelMemory?.() ?? { weights: 0, kvCache: 0 };
        this.set({ kind: "weights" }, m.weights);
        this.set({ kind: "kv_cache" }, m.kvCache);
      },
    });
    new client.Gauge({
      name: METRIC_NAMES.backendInfo,
      help: "Compute backend of this agent (value 1): backend name, device, and why it was chosen.",
      labelNames: ["backend", "adapter", "reason"],
      registers,
      collect() {
        // One series per agent; it changes only when the agent falls back to the CPU.
        this.reset();
        const b = source.backendInfo?.();
        if (b) {
          this.set({
            backend: b.backend,
            adapter: b.adapter.slice(0, 120),
            reason: b.reason.slice(0, 160),
          }, 1);
        }
      },
    });
    new client.Gauge({
      name: METRIC_NAMES.gossipMembers,
      help: "Cluster members this agent knows, by gossip state.",
      labelNames: ["state"],
      registers,
      collect() {
        const m = source.gossipMembers();
        for (const state of MEMBER_STATES) this.set({ state }, m[state] ?? 0);
      },
    });
    // Cumulative counters (gossip's; the prefix cache's and the reply streams', which start
    // again from 0 when a stage reloads): add what grew since the last scrape.
    const grown = (() => {
      const last: Record<string, number> = {};
      return (key: string, n: number) => {
        const d = n >= (last[key] ?? 0) ? n - (last[key] ?? 0) : n;
        last[key] = n;
        return d;
      };
    })();
    new client.Gauge({
      name: METRIC_NAMES.prefixCacheBytes,
      help: "Bytes of KV the hosted stage's prefix cache holds (--prefix-cache).",
      registers,
      collect() {
        this.set(source.prefixCache?.()?.bytes ?? 0);
      },
    });
    new client.Counter({
      name: METRIC_NAMES.prefixCacheTokens,
      help: "Prompt tokens the prefix cache looked up, and those it restored instead of running.",
      labelNames: ["kind"],
      registers,
      collect() {
        const c = source.prefixCache?.();
        this.inc({ kind: "looked_up" }, grown("looked_up", c?.lookupTokens ?? 0));
        this.inc({ kind: "restored" }, grown("restored", c?.hitTokens ?? 0));
      },
    });
    new client.Counter({
      name: METRIC_NAMES.prefixCacheEvictions,
      help: "Blocks the prefix cache evicted to stay within its bytes.",
      registers,
      collect() {
        this.inc(grown("evictions", source.prefixCache?.()?.evictions ?? 0));
      },
    });
    new client.Counter({
      name: METRIC_NAMES.tokensRepliedDirect,
      help: "Tokens this agent, as the tail of a chain, sent straight to their heads.",
      registers,
      collect() {
        this.inc(grown("replied_direct", source.tokensRepliedDirect?.() ?? 0));
      },
    });
    new client.Counter({
      name: METRIC_NAMES.stageSessionsRefused,
      help: "Sessions the hosted stage refused as busy, by reason (sessions, kv_bytes, memory).",
      labelNames: ["reason"],
      registers,
      collect() {
        for (const [reason, n] of Object.entries(source.sessionRefusals?.() ?? {})) {
          this.inc({ reason }, grown(`refused:${reason}`, n));
        }
      },
    });
    new client.Counter({
      name: METRIC_NAMES.gossipPacketsDropped,
      help: "Gossip packets and streams dropped, by reason (decrypt, malformed, ...).",
      labelNames: ["reason"],
      registers,
      collect() {
        for (const [reason, n] of Object.entries(source.gossipDropped())) {
          this.inc({ reason }, grown(`dropped:${reason}`, n));
        }
      },
    });
    this.tokens = new client.Counter({
      name: METRIC_NAMES.tokensGenerated,
      help: "Tokens generated by requests this agent was head of.",
      registers,
    });
    this.inference = new client.Histogram({
      name: METRIC_NAMES.inferenceDuration,
      help: "Duration of whole Generate requests (prefill and decode), seconds.",
      buckets: REQUEST_BUCKETS,
      registers,
    });
    this.stageForward = new client.Histogram({
      name: METRIC_NAMES.stageForwardDuration,
      help: "Compute time of one step of the hosted stage, seconds, by phase.",
      labelNames: ["phase"],
      buckets: STEP_BUCKETS,
      registers,
    });
    // How well batching works: rows (prompt rows + decode rows) and sequences per pass.
    this.passRows = new client.Histogram({
      name: METRIC_NAMES.stagePassRows,
      help: "Rows (prompt and decode tokens of every sequence) in one pass of the hosted stage.",
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048],
      registers,
    });
    this.passSequences = new client.Histogram({
      name: METRIC_NAMES.stagePassSequences,
      help: "Sequences (sessions) sharing one pass of the hosted stage.",
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
      registers,
    });
    this.activationBytes = new client.Counter({
      name: METRIC_NAMES.activationBytes,
      help: "Activation bytes the hosted stage received (in) and sent (out) over RPC.",
      labelNames: ["direction"],
      registers,
    });
    this.modelLoad = new client.Gauge({
      name: METRIC_NAMES.modelLoad,
      help: "Seconds the last stage load took (weights of the hosted layer range).",
      registers,
    });
    // Replicas (`--replicas`): the label is the replica's id, its first stage's node id, so the
    // set of values is the plan's replicas.
    this.replicaTokens = new client.Counter({
      name: METRIC_NAMES.replicaTokens,
      help: "Tokens generated by requests this agent was head of, by the replica that served them.",
      labelNames: ["replica"],
      registers,
    });
    this.replicaRequests = new client.Counter({
      name: METRIC_NAMES.replicaRequests,
      help: "Requests (and replays after a failure) this agent routed to each replica.",
      labelNames: ["replica"],
      registers,
    });
    this.replicaPrefixRoutes = new client.Counter({
      name: METRIC_NAMES.replicaPrefixRoutes,
      help: "Requests this agent routed to a replica because it served their prompt's longest " +
        "recorded prefix (its stages' prefix caches hold it).",
      labelNames: ["replica"],
      registers,
    });
    new client.Gauge({
      name: METRIC_NAMES.replicaSessions,
      help: "Sessions open on each replica of the placement, as its first stage last gossiped.",
      labelNames: ["replica"],
      registers,
      collect() {
        this.reset();
        for (const [replica, n] of Object.entries(source.replicaSessions?.() ?? {})) {
          this.set({ replica }, n);
        }
      },
    });
    this.recovery = new client.Histogram({
      name: METRIC_NAMES.recoveryDuration,
      help: "Requests this agent heads that resumed after a stage failure: seconds from the " +
        "failure to the replay (part=wait: re-placement, a standby's fetch) and of the replay " +
        "(part=replay: the prompt and tokens so far run again).",
      labelNames: ["part"],
      buckets: REQUEST_BUCKETS,
      registers,
    });
    this.forwarded = new client.Counter({
      name: METRIC_NAMES.forwardedRequests,
      help: "Requests this agent, serving no model (--no-model), passed on to an agent that " +
        "serves one, by the API they came in on (grpc: Generate, http: the OpenAI API); a " +
        "retry on another agent counts again.",
      labelNames: ["api"],
      registers,
    });
    // Series with labels exist from the start, so rates and alerts see zeros, not gaps.
    for (const api of ["grpc", "http"]) this.forwarded.inc({ api }, 0);
    for (const part of ["wait", "replay"]) this.recovery.zero({ part });
    for (const phase of ["prefill", "decode"]) this.stageForward.zero({ phase });
    for (const direction of ["in", "out"]) this.activationBytes.inc({ direction }, 0);
  }

  /** One token generated by a request this agent heads (on `replica`, when replicated). */
  onToken(replica?: string): void {
    this.tokens.inc();
    if (replica) this.replicaTokens.inc({ replica });
  }

  /** This agent sent a request (or its replay) to `replica`. */
  onRoute(replica: string): void {
    this.replicaRequests.inc({ replica });
  }

  /** The request just routed to `replica` went there for its prompt's recorded prefix. */
  onPrefixRoute(replica: string): void {
    this.replicaPrefixRoutes.inc({ replica });
  }

  /** A request was passed on to a serving agent over `api` (this agent serves no model). */
  onForwarded(api: "grpc" | "http"): void {
    this.forwarded.inc({ api });
  }

  /** A Generate request ended (any way) after `seconds`. */
  onRequest(seconds: number): void {
    this.inference.observe(seconds);
  }

  /** A request resumed after a stage failure: `waitMs` until its replay, `replayMs` of replay. */
  onResumed(info: { waitMs: number; replayMs: number }): void {
    this.recovery.observe({ part: "wait" }, info.waitMs / 1000);
    this.recovery.observe({ part: "replay" }, info.replayMs / 1000);
  }

  /** The hosted stage ran one step of `rows` tokens in `computeMs`. */
  onStageStep(info: { computeMs: number; rows: number; sequences: number }): void {
    this.stageForward.observe(
      { phase: info.rows > 1 ? "prefill" : "decode" },
      info.computeMs / 1000,
    );
    this.passRows.observe(info.rows);
    this.passSequences.observe(info.sequences);
  }

  /** The Forward handler moved one frame: activation bytes in and out. */
  onFrame(info: { bytesIn: number; bytesOut: number }): void {
    this.activationBytes.inc({ direction: "in" }, info.bytesIn);
    this.activationBytes.inc({ direction: "out" }, info.bytesOut);
  }

  /** A stage finished loading in `seconds`. */
  onModelLoad(seconds: number): void {
    this.modelLoad.set(seconds);
  }

  /** The exposition text (what `/metrics` answers). */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  /** The Content-Type of {@linkcode text}. */
  get contentType(): string {
    return this.registry.contentType;
  }
}
