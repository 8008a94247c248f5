/**
 * The agent: one process that composes gossip membership, the RPC services, a pipeline stage
 * (the layers placement gives it) and the head role for requests it receives.
 *
 * Placement is a pure function of membership (cluster/placement), so every agent computes the
 * same plan from the same gossip view and loads its own range; heads build chains from what
 * agents *announce* they host, so a plan in transition never mixes half-loaded stages.
 */
import { type ConnectRouter, createClient } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { basename } from "node:path";
import type { Backend } from "../kernels/backend.ts";
import { parseBackendName, selectBackend } from "../kernels/select.ts";
import { openModelFile } from "../model/engine.ts";
import type { GGUFFile } from "../model/gguf/mod.ts";
import { LlamaStage } from "../model/llama.ts";
import { configFromFile, type LlamaConfig } from "../model/config.ts";
import type { Tokenizer } from "../model/tokenizer/mod.ts";
import { tokenizerFromMetadata } from "../model/tokenizer/mod.ts";
import { ChatTemplate } from "../model/chat/mod.ts";
import {
  ClusterService,
  DiscoveryService,
  FinishReason,
  type GenerateRequest,
  type GenerateResponse,
  GenerateResponseSchema,
  GenerateUsageSchema,
  InferenceService,
  type NodeMetrics,
  NodeService,
  NodeState,
  PlacementEventSchema,
  PlacementSchema,
  RequestPhase,
  StageAssignmentSchema,
  TokenLogprobSchema,
} from "../proto/mod.ts";
import type { AgentConfig } from "./agent_config.ts";
import {
  discoveryService,
  measureResources,
  MetricsSampler,
  nodeService,
  type RequestTotals,
} from "./discovery/mod.ts";
import { GossipMembershipView } from "./discovery/gossip_view.ts";
import {
  Keyring,
  lanConfig,
  localConfig,
  type Member,
  Memberlist,
  type NodeMetadata,
  wanConfig,
} from "./gossip/mod.ts";
import {
  forwardHandler,
  GossipChainProvider,
  Head,
  LocalStageLink,
  RemoteStageLink,
  type StageCandidate,
  StageHost,
  type StageLink,
  tileChain,
} from "./pipeline/mod.ts";
import { calibrate } from "./placement/calibrate.ts";
import {
  footprintFromIndex,
  type ModelFootprint,
  type Placement,
  PlacementError,
  planPlacement,
} from "./placement/mod.ts";
import {
  createRpcTransport,
  RpcFailure,
  type RpcServer,
  type RpcTransport,
  startRpcServer,
} from "./rpc/mod.ts";
import { tlsFilesFromOptions } from "./tls/mod.ts";
import {
  AgentMetrics,
  type MetricsServer,
  type MetricsSource,
  setTraceAttributes,
  startMetricsServer,
  traceClientInterceptor,
  traceServerInterceptor,
} from "./telemetry/mod.ts";
import {
  type ClusterCommands,
  clusterService,
  type CommandResult,
  EventHub,
  LeveledLog,
  MembershipTracker,
  RequestTracker,
} from "./events/mod.ts";
import { memberToNodeInfo, type NodeInfoExtras } from "./discovery/gossip_view.ts";
import { VERSION } from "../cli/version.ts";
import {
  Admission,
  type ApiServer,
  PromptTooLongError,
  startApiServer,
  StopMatcher,
  type TextGenerator,
  toGenerateRequest,
  toGenerationEvents,
} from "./api/mod.ts";
import { type TransferHost, TransferManager, transferService } from "./transfer/mod.ts";
import { grpcHealthService, Health, HealthStatus } from "./rpc/health.ts";
import { reflectionService, ServerReflection } from "./rpc/reflection.ts";
import { type TransferProgress, TransferService } from "../proto/mod.ts";

/** Structured log line sink. */
export type AgentLogger = (
  level: "debug" | "info" | "warn" | "error",
  msg: string,
  fields?: Record<string, unknown>,
) => void;

/** The model an agent serves: its file index, tokenizer and footprint. */
interface ServedModel {
  id: string;
  file: GGUFFile;
  tokenizer: Tokenizer;
  /** Renders chat messages (the GGUF's template, or a plain transcript). */
  chat: ChatTemplate;
  nLayers: number;
  contextLength: number;
  footprint: ModelFootprint;
}

/** A running agent. */
export class Agent {
  private stage?: StageHost;
  private loading?: Promise<void>;
  private plannedRange?: { from: number; to: number };
  private planTimer?: ReturnType<typeof setTimeout>;
  private readonly transports = new Map<string, { endpoint: string; transport: RpcTransport }>();
  private readonly requests = new Map<string, AbortController>();
  private epoch = 0n;
  private lastPlan?: Placement;
  /** Why the last planning attempt found no placement (shown to clients). */
  private planError?: string;
  private stopped = false;
  /** When each member's state last changed as this agent saw it, Unix ms. */
  private readonly stateChangedAt = new Map<string, number>();
  /** SIGTERM arrived: new requests are refused while those in flight finish. */
  private draining = false;
  private fallingBack = false;
  /** Cluster events for ClusterService.StreamUpdates (llmctl, the TUI). */
  readonly events = new EventHub({ history: 256 });
  private readonly memberEvents = new MembershipTracker(this.events);
  /** Why the next placement change happens: the last membership change seen. */
  private planReason = "start-up";
  /** Drained (ClusterService drain_node): this node offers no layers any more. */
  private drained = false;
  /** The run-time log level (ClusterService set_log_level). */
  private leveled?: LeveledLog;
  /** Prometheus metrics (cluster/telemetry), served on the metrics port; read on scrape. */
  readonly metrics: AgentMetrics = new AgentMetrics(this.metricsSource());
  private metricsServer?: MetricsServer;
  /** The OpenAI-compatible HTTP API (cluster/api). */
  private api?: ApiServer;
  /** Generation slots this agent heads, and the queue in front of them. */
  private admission!: Admission;
  private readonly startedAt = Math.floor(Date.now() / 1000);
  /** Model distribution (cluster/transfer): manifests, chunk serving, the cache, deploys. */
  transfer!: TransferManager;
  /** The local file the served model was opened from (a source for peers), if any. */
  private modelPath?: string;
  /** Counters for metrics and health. */
  readonly counters = {
    activeRequests: 0,
    tokensGeneratedTotal: 0,
    framesProcessedTotal: 0,
    recoveries: 0,
  };

  private constructor(
    readonly config: AgentConfig,
    public backend: Backend,
    public backendReason: string,
    readonly speed: number,
    public model: ServedModel | undefined,
    readonly gossip: Memberlist,
    private rpc: RpcServer | undefined,
    private readonly log: AgentLogger,
  ) {}

  /** Start every part of an agent and join the cluster. */
  static async start(cfg: AgentConfig, log: AgentLogger = () => {}): Promise<Agent> {
    const leveled = new LeveledLog(log, cfg.logLevel);
    log = leveled.log;
    // The model's index first: a corrupt file ends start-up before anything is allocated.
    let model: ServedModel | undefined;
    if (cfg.model) model = await loadModelIndex(cfg.model, cfg.contextSize, cfg.maxSessions);
    const { backend, reason } = await selectBackend(parseBackendName(cfg.backend), {
      threads: cfg.threads,
    });
    log("info", "backend selected", { backend: backend.name, device: backend.device, reason });
    const speed = await calibrate(backend, 100);
    log("info", "calibrated", { gflops: Math.round(speed * 100) / 100 });

    const keyring = cfg.gossipKeys.length
      ? new Keyring(
        Keyring.parseKey(cfg.gossipKeys[0]),
        cfg.gossipKeys.slice(1).map((k) => Keyring.parseKey(k)),
      )
      : null;
    const preset = cfg.gossipPreset === "local"
      ? localConfig
      : cfg.gossipPreset === "wan"
      ? wanConfig
      : lanConfig;
    const meta: NodeMetadata = {
      id: cfg.nodeId,
      addresses: [cfg.advertiseAddress],
      rpcPort: cfg.rpcPort,
      metricsPort: cfg.metricsPort,
      httpPort: cfg.httpPort,
      resources: {
        memoryBytes: cfg.memoryBudget,
        cores: navigator.hardwareConcurrency,
        backend: backend.name,
        // The device and why auto-selection chose it, so `llmctl nodes list` can show both.
        adapter: `${backend.device} — ${reason}`.slice(0, 240),
        speed,
      },
      model: model?.id ?? "",
      hosted: null,
      version: VERSION,
    };
    const gossip = await Memberlist.listen(
      preset({
        nodeId: cfg.nodeId,
        metadata: meta,
        keyring,
        logger: (level, msg, fields) =>
          log(level === "debug" ? "debug" : level, `gossip: ${msg}`, fields),
      }),
      { bindAddr: cfg.bind, port: cfg.gossipPort, advertiseAddr: cfg.advertiseAddress },
    );
    const agent = new Agent(cfg, backend, reason, speed, model, gossip, undefined, log);
    agent.admission = new Admission(cfg.maxRequests, cfg.queueSize);
    agent.stateChangedAt.set(cfg.nodeId, Date.now());
    agent.leveled = leveled;
    agent.modelPath = model ? cfg.model : undefined;
    agent.transfer = new TransferManager(agent.transferHost(), {
      cacheDir: cfg.cacheDir,
      rateLimit: cfg.transferRateLimit,
      tls: tlsFilesFromOptions({ tlsCert: cfg.tlsCert, tlsKey: cfg.tlsKey, tlsCa: cfg.tlsCa }),
      // Test hook (README "Model distribution"): corrupt served chunks on purpose.
      corruptChunks: Deno.env.get("DLLM_TEST_CORRUPT_CHUNKS"),
    });
    agent.transfer.scanCache().catch((e) =>
      log("warn", "cannot read the model cache", { dir: cfg.cacheDir, error: String(e) })
    );
    try {
      agent.rpc = await startRpcServer({
        host: cfg.bind,
        port: cfg.rpcPort,
        tls: tlsFilesFromOptions({ tlsCert: cfg.tlsCert, tlsKey: cfg.tlsKey, tlsCa: cfg.tlsCa }),
        insecureBindAll: cfg.insecureBindAll,
        routes: (r) => agent.routes(r),
        interceptors: [traceServerInterceptor],
      });
    } catch (e) {
      await gossip.shutdown();
      backend.dispose();
      throw e;
    }
    for (const type of ["join", "leave", "dead", "update", "alive"] as const) {
      gossip.on(type, (e) => {
        agent.memberEvent(e.type, e.member);
        if (type !== "update" || e.member.id !== cfg.nodeId) {
          log("info", `member ${type}`, { node: e.member.id });
        }
        if (e.type === "dead" || e.type === "leave") agent.dropTransport(e.member.id);
        agent.schedulePlan();
      });
    }
    gossip.on("suspect", (e) => agent.memberEvent(e.type, e.member));
    // Telemetry: /metrics and /health on --metrics-port; spans name this node.
    setTraceAttributes({ "dllm.node": cfg.nodeId });
    try {
      agent.metricsServer = await startMetricsServer({
        host: cfg.bind,
        port: cfg.metricsPort,
        metrics: async () => ({
          text: await agent.metrics.text(),
          contentType: agent.metrics.contentType,
        }),
        readiness: () => agent.readiness(),
      });
      agent.api = await startApiServer({
        host: cfg.bind,
        port: cfg.httpPort,
        apiKey: cfg.apiKey,
        generator: agent.textGenerator(),
        headersTimeoutMs: cfg.httpHeaderTimeout,
        bodyTimeoutMs: cfg.httpBodyTimeout,
        maxConnections: cfg.httpMaxConnections,
        corsOrigins: cfg.corsOrigin,
        log,
      });
    } catch (e) {
      await agent.stop();
      throw e;
    }
    const published = gossip.localNode.meta!;
    if (
      published.rpcPort !== agent.rpcPort || published.metricsPort !== agent.metricsPort ||
      published.httpPort !== agent.httpPort
    ) {
      // Asked for port 0: peers (and Prometheus discovery) must learn the ports the OS picked.
      gossip.updateMetadata({
        ...published,
        rpcPort: agent.rpcPort,
        metricsPort: agent.metricsPort,
        httpPort: agent.httpPort,
      });
    }
    agent.joinInBackground();
    agent.schedulePlan();
    return agent;
  }

  /** The RPC port actually bound. */
  get rpcPort(): number {
    return this.rpc?.port ?? this.config.rpcPort;
  }

  /** The metrics port actually bound. */
  get metricsPort(): number {
    return this.metricsServer?.port ?? this.config.metricsPort;
  }

  /** The HTTP API port actually bound. */
  get httpPort(): number {
    return this.api?.port ?? this.config.httpPort;
  }

  /** The gossip address actually bound. */
  get gossipAddr(): string {
    return this.gossip.transport.addr;
  }

  /** The stage hosted now, if any. */
  get hosted(): StageHost | undefined {
    return this.stage;
  }

  /** Leave the cluster gracefully and stop every listener. */
  async stop(): Promise<void> {
    if (this.stopped || this.draining) return;
    // New requests are refused from here on; those in flight get the grace period to finish.
    this.draining = true;
    const deadline = Date.now() + this.config.shutdownGrace;
    if (this.requests.size > 0) {
      this.log("info", "draining", {
        requests: this.requests.size,
        graceMs: this.config.shutdownGrace,
      });
    }
    while (this.requests.size > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, Math.min(50, Math.max(1, deadline - Date.now()))));
    }
    try {
      await this.gossip.leave(2000);
    } catch (e) {
      this.log("warn", "leave failed", { error: String(e) });
    }
    this.stopped = true;
    this.events.closeAll();
    clearTimeout(this.planTimer);
    // What is left is cut off, and says so: never a "stop" as if the model had finished.
    if (this.requests.size > 0) {
      this.log("warn", "shutdown cut off generations", { requests: this.requests.size });
    }
    for (const c of this.requests.values()) c.abort(SHUTDOWN);
    // Let the cut-off streams send their error before the listeners close.
    for (let i = 0; i < 20 && this.requests.size > 0; i++) {
      await new Promise((r) => setTimeout(r, 25));
    }
    await this.gossip.shutdown();
    await this.rpc?.close(500);
    await this.metricsServer?.close();
    await this.api?.close();
    for (const { transport } of this.transports.values()) transport.close();
    this.stage?.closeAll();
    this.transfer?.close();
    this.model?.file.close();
    this.backend.dispose();
  }

  // ---------------------------------------------------------------- membership & placement

  /** Retry joining the seeds until one answers (they may start after us). */
  private joinInBackground(): void {
    const seeds = this.config.seeds.filter((s) => s !== this.gossipAddr);
    if (seeds.length === 0) return;
    let delay = 200;
    const attempt = async () => {
      if (this.stopped) return;
      try {
        const n = await this.gossip.join(seeds);
        this.log("info", "joined the cluster", {
          seedsAnswered: n,
          members: this.gossip.numMembers(),
        });
      } catch (e) {
        if ((e as Error).name === "DuplicateNodeIdError") {
          this.log("error", (e as Error).message);
          return;
        }
        this.log("warn", "join failed; retrying", { error: (e as Error).message, retryMs: delay });
        setTimeout(attempt, delay);
        delay = Math.min(delay * 2, 5000);
      }
    };
    attempt();
  }

  /** Re-plan shortly after membership settles (several events usually arrive together). */
  private schedulePlan(): void {
    if (this.stopped || !this.model) return;
    clearTimeout(this.planTimer);
    this.planTimer = setTimeout(() => this.replan(), 250);
  }

  /** Members (this one included) that offer our model, with their placement inputs. */
  private modelPeers(): Member[] {
    return this.gossip.members().filter((m) =>
      m.status === "alive" && m.meta?.model === this.model?.id
    );
  }

  private replan(): void {
    if (this.stopped || !this.model) return;
    const peers = this.modelPeers();
    // A deploy in progress: wait until every planned node offers the model (cluster/transfer).
    if (!this.transfer.planReady(this.model.id, peers.map((m) => m.id))) return;
    let plan: Placement;
    try {
      plan = planPlacement(
        this.model.footprint,
        peers.map((m) => ({
          id: m.id,
          memoryBudget: m.meta!.resources.memoryBytes,
          speed: m.meta!.resources.speed || 1,
        })),
      );
    } catch (e) {
      if (e instanceof PlacementError) {
        this.log("warn", "no placement", { error: e.message, members: peers.length });
        this.lastPlan = undefined;
        if (this.planError !== e.message) this.publishPlacement(`no placement: ${e.message}`);
        this.planError = e.message;
        return;
      }
      throw e;
    }
    const key = JSON.stringify(plan.stages.map((s) => [s.nodeId, s.from, s.to]));
    if (key !== JSON.stringify(this.lastPlan?.stages.map((s) => [s.nodeId, s.from, s.to]))) {
      this.epoch++;
      this.log("info", "placement", {
        stages: plan.stages.map((s) => `${s.nodeId}:[${s.from},${s.to})`).join(" "),
      });
      this.publishPlacement(this.planReason, plan);
    }
    this.lastPlan = plan;
    this.planError = undefined;
    const mine = plan.stages.find((s) => s.nodeId === this.config.nodeId);
    const want = mine ? { from: mine.from, to: mine.to } : undefined;
    if (want?.from === this.plannedRange?.from && want?.to === this.plannedRange?.to) return;
    this.plannedRange = want;
    this.loading = (this.loading ?? Promise.resolve()).then(() => this.loadRange(want));
  }

  /** Load (or drop) this agent's stage, then announce it in gossip. */
  private async loadRange(want: { from: number; to: number } | undefined): Promise<void> {
    if (this.stopped || !this.model) return;
    // A newer plan may have superseded this one while we waited.
    if (want?.from !== this.plannedRange?.from || want?.to !== this.plannedRange?.to) return;
    const old = this.stage;
    if (!want) {
      this.stage = undefined;
      old?.dispose();
      this.announce();
      if (old) this.publishSelf(`${this.config.nodeId} dropped its layers`);
      return;
    }
    const t0 = performance.now();
    try {
      // A deployed model: fetch whatever this range misses into the cache first.
      // Gives up when a newer plan supersedes this range (the next load fetches its own).
      await this.transfer.ensure(this.model.id, want, () => this.plannedRange === want);
      if (!this.model || this.plannedRange !== want) return;
      const stage = await LlamaStage.load(this.model.file, this.backend, {
        ...want,
        maxBatch: this.config.batchSize,
      });
      this.stage = new StageHost(stage, this.model.id, {
        maxSessions: this.config.maxSessions,
        defaultContext: Math.min(this.config.contextSize, this.model.contextLength),
        onStep: (info) => this.metrics.onStageStep(info),
        onFailure: (e) => this.onStageFailure(e),
      });
      this.metrics.onModelLoad((performance.now() - t0) / 1000);
      // Free the previous range's weights: re-placement must not leak memory.
      old?.dispose();
      this.log("info", "stage loaded", {
        layers: `[${want.from},${want.to})`,
        bytes: stage.weightBytes,
        ms: Math.round(performance.now() - t0),
      });
      this.announce();
      this.publishSelf(
        `${this.config.nodeId} loaded layers [${want.from},${want.to}) in ` +
          `${Math.round(performance.now() - t0)} ms`,
      );
    } catch (e) {
      this.log("error", "stage load failed", {
        layers: `[${want.from},${want.to})`,
        error: (e as Error).message,
      });
      if (this.plannedRange === want && !this.stopped) this.leaveAfterLoadFailure(want, e);
    }
  }

  /**
   * A stage that cannot load must not stay in the plan (heads would wait for layers nobody
   * serves): stop offering the model, as a drain does, and say why in gossip so every agent's
   * status shows it. Deploying the model again clears it.
   */
  private leaveAfterLoadFailure(range: { from: number; to: number }, e: unknown): void {
    let reason = `layers [${range.from},${range.to}): ${(e as Error).message ?? e}`;
    // Gossip metadata strings are at most 255 bytes.
    while (new TextEncoder().encode(reason).length > 200) reason = reason.slice(0, -8);
    this.drained = true;
    this.gossip.updateMetadata({ ...this.gossip.localNode.meta!, model: "", stageError: reason });
    this.planReason = `${this.config.nodeId} failed to load its stage`;
    this.publishSelf(`${this.config.nodeId} failed to load ${reason}; placement routes around it`);
    this.schedulePlan();
  }

  /**
   * A stage pass failed because the GPU is gone (device lost, out of memory): rebuild this
   * agent's stage on the WASM CPU backend instead of crashing. Requests in flight fail on this
   * stage; their heads replay them once the stage is back.
   */
  private onStageFailure(e: unknown): void {
    if (this.fallingBack || this.backend.name !== "webgpu" || this.stopped) return;
    this.fallingBack = true;
    const range = this.plannedRange;
    this.log("error", "GPU lost; falling back to the WASM CPU backend", {
      error: (e as Error).message,
      layers: range ? `[${range.from},${range.to})` : null,
    });
    (async () => {
      const { backend } = await selectBackend("wasm", { threads: this.config.threads });
      const gpu = this.backend;
      const old = this.stage;
      this.stage = undefined;
      this.announce();
      old?.closeAll();
      gpu.dispose();
      this.backend = backend;
      this.backendReason = `fell back from WebGPU after: ${(e as Error).message}`.slice(0, 200);
      const meta = this.gossip.localNode.meta!;
      this.gossip.updateMetadata({
        ...meta,
        resources: {
          ...meta.resources,
          backend: backend.name,
          adapter: `${backend.device} — ${this.backendReason}`.slice(0, 240),
        },
      });
      this.plannedRange = range;
      await this.loadRange(range);
    })().catch((err) => this.log("error", "CPU fallback failed", { error: String(err) }))
      .finally(() => (this.fallingBack = false));
  }

  /** Publish the hosted range in gossip metadata (a new alive with a higher incarnation). */
  private announce(): void {
    const meta = this.gossip.localNode.meta;
    if (!meta || this.stopped) return;
    this.gossip.updateMetadata({
      ...meta,
      hosted: this.stage
        ? { model: this.model!.id, from: this.stage.range.from, to: this.stage.range.to }
        : null,
    });
  }

  private dropTransport(nodeId: string): void {
    const t = this.transports.get(nodeId);
    if (t) {
      t.transport.close();
      this.transports.delete(nodeId);
    }
  }

  /**
   * Sums of every alive member's own GetMetrics sample (this node's without a call): requests,
   * tokens and memory are per-process counters that gossip does not carry. A member that does
   * not answer within 500 ms is left out rather than delaying the answer.
   */
  private async clusterTotals(local: () => NodeMetrics): Promise<RequestTotals> {
    const alive = this.gossip.members().filter((m) => m.status === "alive" && m.meta);
    const samples = await Promise.all(alive.map(async (m) => {
      if (m.id === this.config.nodeId) return local();
      try {
        const client = createClient(NodeService, await this.transportTo(m));
        return (await client.getMetrics({}, { timeoutMs: 500 })).metrics;
      } catch {
        return undefined;
      }
    }));
    const t = {
      activeRequests: 0,
      tokensGeneratedTotal: 0,
      memoryTotalBytes: 0,
      memoryAvailableBytes: 0,
    };
    for (const s of samples) {
      if (!s) continue;
      t.activeRequests += s.activeRequests;
      t.tokensGeneratedTotal += Number(s.tokensGeneratedTotal);
      t.memoryTotalBytes += Number(s.memoryTotalBytes);
      t.memoryAvailableBytes += Number(s.memoryAvailableBytes);
    }
    return t;
  }

  /** A (cached) RPC transport to a member. */
  private async transportTo(member: Member): Promise<RpcTransport> {
    const meta = member.meta!;
    const endpoint = `${meta.addresses[0] ?? member.addr.split(":")[0]}:${meta.rpcPort}`;
    const cached = this.transports.get(member.id);
    if (cached && cached.endpoint === endpoint) return cached.transport;
    cached?.transport.close();
    const transport = await createRpcTransport(endpoint, {
      tls: this.clientTls(),
      interceptors: [traceClientInterceptor],
      // Activations are floats that do not compress; gzip would only add latency to every hop.
      gzip: false,
    });
    this.transports.set(member.id, { endpoint, transport });
    return transport;
  }

  private clientTls() {
    const c = this.config;
    return c.tlsCert && c.tlsKey && c.tlsCa
      ? { cert: c.tlsCert, key: c.tlsKey, ca: c.tlsCa }
      : undefined;
  }

  /** Members announcing a loaded stage (alive or suspect), indexed into `byId` when given. */
  private stageCandidates(byId?: Map<string, Member>): StageCandidate[] {
    byId?.clear();
    const out: StageCandidate[] = [];
    for (const m of this.gossip.members()) {
      const h = m.meta?.hosted;
      if (!h || (m.status !== "alive" && m.status !== "suspect")) continue;
      byId?.set(m.id, m);
      out.push({
        id: m.id,
        status: m.status,
        model: h.model,
        from: h.from,
        to: h.to,
        version: m.incarnation,
      });
    }
    return out;
  }

  /** Which layers no loaded stage covers yet, in words (null when a complete chain exists). */
  private missingLayers(): string | null {
    if (!this.model) return null;
    const n = this.model.nLayers;
    const t = tileChain(this.stageCandidates(), this.model.id, n, new Set());
    return Array.isArray(t) ? null : `layers ${t.missingFrom}..${n - 1} are not loaded yet`;
  }

  /** The chain provider heads use: announced ranges of live members. */
  private chainProvider(): GossipChainProvider {
    const model = this.model!;
    const byId = new Map<string, Member>();
    return new GossipChainProvider({
      model: model.id,
      nLayers: model.nLayers,
      candidates: () => this.stageCandidates(byId),
      link: (c): StageLink => {
        if (c.id === this.config.nodeId && this.stage) {
          return new LocalStageLink(c.id, this.stage, c.version);
        }
        return new LazyRemoteLink(c, () => this.transportTo(byId.get(c.id)!), model.id);
      },
    });
  }

  // ---------------------------------------------------------------- RPC services

  private routes(r: ConnectRouter): void {
    const view = new GossipMembershipView(this.gossip, {
      clusterName: this.config.clusterName,
      placement: () => this.placementMessage(),
      onLocalLeave: () => this.stop(),
      extras: this.nodeInfoExtras(),
    });
    const sampler = new MetricsSampler(this.config.nodeId, () => ({
      activeSessions: this.stage?.openSessions ?? 0,
      activeRequests: this.counters.activeRequests,
      tokensGeneratedTotal: this.counters.tokensGeneratedTotal,
      framesProcessedTotal: this.counters.framesProcessedTotal,
    }));
    r.service(
      DiscoveryService,
      discoveryService(view, { requestTotals: () => this.clusterTotals(() => sampler.sample()) }),
    );
    r.service(
      NodeService,
      nodeService({
        view,
        resources: () =>
          measureResources({
            memoryBudgetBytes: this.config.memoryBudget,
            usedLayers: () => this.stage ? this.stage.range.to - this.stage.range.from : 0,
          }),
        metrics: () => sampler.sample(),
        readiness: () => this.readiness(),
      }),
    );
    r.service(
      ClusterService,
      clusterService({
        hub: this.events,
        localId: this.config.nodeId,
        snapshot: () => ({ members: view.members(), placement: this.placementMessage() }),
        metrics: () => sampler.sample(),
        peers: () =>
          this.gossip.members()
            .filter((m) => m.id !== this.config.nodeId && m.status === "alive" && m.meta)
            .map((m) => ({ id: m.id, transport: () => this.transportTo(m) })),
        commands: this.clusterCommands(),
      }),
    );
    r.service(TransferService, transferService(this.transfer));
    // Reflection, so grpcurl needs no .proto files.
    r.service(
      ServerReflection,
      reflectionService([...RPC_SERVICES, InferenceService, Health]),
    );
    // Standard gRPC health: "" is the agent (serving while it runs), InferenceService is ready
    // when every layer is loaded somewhere; the other services answer whenever the agent runs.
    r.service(
      Health,
      grpcHealthService((service) => {
        if (service === InferenceService.typeName) {
          return this.readiness().serving ? HealthStatus.SERVING : HealthStatus.NOT_SERVING;
        }
        if (service === "" || RPC_SERVICES.some((d) => d.typeName === service)) {
          return this.stopped || this.draining ? HealthStatus.NOT_SERVING : HealthStatus.SERVING;
        }
        return undefined;
      }),
    );
    r.service(InferenceService, {
      forward: forwardHandler({
        host: () => this.stage,
        epoch: () => 0n,
        onFrame: (frame) => {
          this.counters.framesProcessedTotal++;
          this.metrics.onFrame(frame);
        },
      }),
      generate: (req, ctx) => this.generate(req, ctx.signal),
      cancel: (req) => {
        const c = this.requests.get(req.requestId);
        c?.abort();
        return { cancelled: c !== undefined };
      },
    });
  }

  // ---------------------------------------------------------------- cluster events & commands

  /** Publish a gossip membership change; remember it as the reason of the next re-plan. */
  private memberEvent(type: string, member: Member): void {
    if (type !== "update") this.stateChangedAt.set(member.id, Date.now());
    this.memberEvents.publish(memberToNodeInfo(member, this.nodeInfoExtras()));
    if (type !== "update") this.planReason = `node ${member.id} ${type}`;
  }

  /** Publish the placement (or its absence) with why it changed. */
  private publishPlacement(reason: string, plan?: Placement): void {
    this.events.publish({
      case: "placement",
      value: create(PlacementEventSchema, { placement: this.placementMessage(plan), reason }),
    });
  }

  /** Publish this node's own state (gossip reports no events about ourselves). */
  private publishSelf(reason: string): void {
    this.memberEvents.publish(memberToNodeInfo(this.gossip.localNode, this.nodeInfoExtras()));
    this.publishPlacement(reason);
  }

  /** What ClusterService.ExecuteCommand can make this agent do. */
  private clusterCommands(): ClusterCommands {
    const id = this.config.nodeId;
    return {
      drain: (dryRun) => this.drain(dryRun),
      replan: (model, dryRun) => {
        if (!this.model) return { message: `${id} serves no model; nothing to plan` };
        if (model && model !== this.model.id && model !== basename(this.model.id.split("@")[0])) {
          throw new RpcFailure(
            "not_found",
            `model ${model} is not served (this cluster serves ${this.model.id})`,
          );
        }
        if (dryRun) {
          const plan = this.planWithout(undefined);
          return {
            message: `would re-plan ${this.model.id}`,
            placement: this.placementMessage(plan),
          };
        }
        this.planReason = "command";
        this.replan();
        if (this.planError) {
          throw new RpcFailure("failed_precondition", `no placement: ${this.planError}`);
        }
        return { message: `re-planned ${this.model.id}`, placement: this.placementMessage() };
      },
      setLogLevel: (level, dryRun) => {
        const was = this.leveled?.level ?? this.config.logLevel;
        if (!dryRun && this.leveled) this.leveled.level = level;
        return {
          message: `${dryRun ? "would set" : "set"} ${id}'s log level from ${was} to ${level}`,
        };
      },
      forward: async (nodeId, req) => {
        const m = this.gossip.member(nodeId);
        if (!m?.meta || (m.status !== "alive" && m.status !== "suspect")) {
          throw new RpcFailure("not_found", `no live member ${nodeId}; see \`llmctl nodes list\``);
        }
        return await createClient(ClusterService, await this.transportTo(m)).executeCommand(req);
      },
    };
  }

  /** A plan over the members offering our model, minus `without`; throws when none fits. */
  private planWithout(without: string | undefined): Placement {
    const peers = this.modelPeers().filter((m) => m.id !== without);
    try {
      return planPlacement(
        this.model!.footprint,
        peers.map((m) => ({
          id: m.id,
          memoryBudget: m.meta!.resources.memoryBytes,
          speed: m.meta!.resources.speed || 1,
        })),
      );
    } catch (e) {
      if (e instanceof PlacementError) throw new RpcFailure("failed_precondition", e.message);
      throw e;
    }
  }

  /** Drain: stop offering our model in gossip, so every agent re-plans without this node. */
  private drain(dryRun: boolean): CommandResult {
    const id = this.config.nodeId;
    if (!this.model) return { message: `${id} serves no model; nothing to drain` };
    if (this.drained) {
      return { message: `${id} is already drained`, placement: this.placementMessage() };
    }
    let plan: Placement;
    try {
      plan = this.planWithout(id);
    } catch (e) {
      throw new RpcFailure(
        "failed_precondition",
        `draining ${id} would leave the model unplaced (${(e as Error).message}); add agents first`,
      );
    }
    const placement = this.placementMessage(plan);
    const where = plan.stages.map((s) => `${s.nodeId}:[${s.from},${s.to})`).join(" ");
    if (dryRun) return { message: `would drain ${id}; layers would move to ${where}`, placement };
    this.drained = true;
    this.gossip.updateMetadata({ ...this.gossip.localNode.meta!, model: "" });
    this.planReason = `node ${id} drained`;
    this.log("info", "drained", { node: id });
    this.schedulePlan();
    return { message: `drained ${id}; layers move to ${where}`, placement };
  }

  /** What a metrics scrape reads from this agent (cluster/telemetry). */
  private metricsSource(): MetricsSource {
    return {
      layersHosted: () => this.stage ? this.stage.range.to - this.stage.range.from : 0,
      backendInfo: () => ({
        backend: this.backend.name,
        adapter: this.backend.device,
        reason: this.backendReason,
      }),
      requestsActive: () => this.counters.activeRequests,
      // Work waiting here: requests queued for a generation slot, plus stage frames waiting for
      // (or in) the current batched pass. This is what the KEDA queue-depth scaler reads.
      queueDepth: () => (this.admission?.stats.queued ?? 0) + (this.stage?.pending ?? 0),
      kvCacheSlots: () => {
        const used = this.stage?.openSessions ?? 0;
        return { used, free: this.stage ? Math.max(0, this.config.maxSessions - used) : 0 };
      },
      modelMemory: () => this.stage?.memoryBytes ?? { weights: 0, kvCache: 0 },
      gossipMembers: () => {
        const out: Record<string, number> = {};
        for (const m of this.gossip.allMembers()) out[m.status] = (out[m.status] ?? 0) + 1;
        return out;
      },
      gossipProbeRttMs: () => this.gossip.stats.probeRttMs,
      gossipDropped: () => this.gossip.stats.droppedPackets,
    };
  }

  private readiness(): { serving: boolean; detail?: string } {
    if (this.stopped) return { serving: false, detail: "agent is stopping" };
    if (this.model && !this.lastPlan) {
      return { serving: false, detail: "no placement yet (waiting for enough agents)" };
    }
    // Planned is not enough: until every layer is loaded somewhere, requests would only wait.
    const missing = this.missingLayers();
    if (missing) return { serving: false, detail: `loading: ${missing}` };
    return { serving: true };
  }

  private placementMessage(plan = this.lastPlan) {
    if (!plan || !this.model) return undefined;
    return create(PlacementSchema, {
      model: this.model.id,
      totalLayers: plan.nLayers,
      epoch: this.epoch,
      stages: plan.stages.map((s) =>
        create(StageAssignmentSchema, {
          nodeId: s.nodeId,
          fromLayer: s.from,
          toLayer: s.to,
          rpcEndpoint: this.rpcEndpointOf(s.nodeId),
        })
      ),
    });
  }

  /** "host:port" of a member's RPC listener, from its gossip metadata ("" when unknown). */
  private rpcEndpointOf(nodeId: string): string {
    const m = this.gossip.member(nodeId);
    if (!m?.meta) return "";
    return `${m.meta.addresses[0] ?? m.addr.slice(0, m.addr.lastIndexOf(":"))}:${m.meta.rpcPort}`;
  }

  /** NodeInfo fields gossip does not carry: layer counts of the served model, state changes. */
  private nodeInfoExtras(): NodeInfoExtras {
    return {
      totalLayers: (model) => model === this.model?.id ? this.model.nLayers : 0,
      maxLayers: (bytes) => {
        const f = this.model?.footprint;
        if (!f || f.nLayers === 0) return 0;
        const perLayer = f.layerBytes.reduce((a, b) => a + b, 0) / f.nLayers + f.kvBytesPerLayer;
        return Math.min(f.nLayers, Math.floor(bytes / perLayer));
      },
      stateChangedAt: (id) => this.stateChangedAt.get(id) ?? 0,
    };
  }

  /** What model distribution (cluster/transfer) needs from this agent. */
  private transferHost(): TransferHost {
    return {
      nodeId: this.config.nodeId,
      members: () =>
        this.gossip.members().filter((m) => m.meta).map((m) => ({
          id: m.id,
          endpoint: `${m.meta!.addresses[0] ?? m.addr.split(":")[0]}:${m.meta!.rpcPort}`,
          model: m.meta!.model ?? "",
          status: m.status,
        })),
      served: () => this.model && { id: this.model.id, path: this.modelPath },
      hostedRange: () => this.stage && { ...this.stage.range },
      plan: (file, modelId, nodes) => {
        const fp = agentFootprint(file, this.config.contextSize, this.config.maxSessions);
        const plan = planPlacement(
          fp,
          this.gossip.members().filter((m) => m.meta && nodes.includes(m.id)).map((m) => ({
            id: m.id,
            memoryBudget: m.meta!.resources.memoryBytes,
            speed: m.meta!.resources.speed || 1,
          })),
        );
        return create(PlacementSchema, {
          model: modelId,
          totalLayers: plan.nLayers,
          stages: plan.stages.map((s) =>
            create(StageAssignmentSchema, { nodeId: s.nodeId, fromLayer: s.from, toLayer: s.to })
          ),
        });
      },
      adopt: async (id, file, path) => {
        if (this.model?.id === id) return;
        if (this.model) await this.unserveModel(this.model.id);
        this.model = servedModel(id, file, this.config.contextSize, this.config.maxSessions);
        this.modelPath = path;
        this.drained = false;
        this.planReason = `model ${id} deployed`;
        this.gossip.updateMetadata({ ...this.gossip.localNode.meta!, model: id, stageError: "" });
        this.log("info", "serving a deployed model", { model: id, path: path ?? "(cache)" });
        this.schedulePlan();
      },
      unserve: (id) => this.unserveModel(id),
      publish: (value: TransferProgress) => this.events.publish({ case: "transfer", value }),
      log: (level, msg, f) => this.log(level, msg, f),
    };
  }

  /** Stop serving model `id`: drop the stage, stop offering it in gossip. */
  private async unserveModel(id: string): Promise<boolean> {
    const model = this.model;
    if (!model || model.id !== id) return false;
    await this.loading?.catch(() => {});
    this.model = undefined;
    this.modelPath = undefined;
    this.plannedRange = undefined;
    this.lastPlan = undefined;
    this.planError = undefined;
    const old = this.stage;
    this.stage = undefined;
    old?.dispose(); // frees the weights: undeploy gives the memory back
    this.gossip.updateMetadata({ ...this.gossip.localNode.meta!, model: "", hosted: null });
    model.file.close();
    this.log("info", "model undeployed", { model: id });
    this.publishSelf(`${this.config.nodeId} undeployed ${id}`);
    return true;
  }

  /** What the HTTP API (cluster/api) calls: the same generation core as InferenceService.Generate. */
  private textGenerator(): TextGenerator {
    const pieces = new Map<number, string>();
    const tokenText = (id: number) => {
      let t = pieces.get(id);
      if (t === undefined) {
        t = new TextDecoder().decode(this.model!.tokenizer.tokenPiece(id));
        pieces.set(id, t);
      }
      return t;
    };
    return {
      models: () =>
        this.model
          ? [{
            id: basename(this.model.id.split("@")[0]),
            created: this.startedAt,
            contextLength: Math.min(this.config.contextSize, this.model.contextLength),
          }]
          : [],
      health: () => this.apiHealth(),
      generate: (params, signal) =>
        toGenerationEvents(this.generate(toGenerateRequest(params), signal), tokenText),
    };
  }

  /** GET /health on the HTTP port: serving state, generation slots, queue and KV cache slots. */
  private apiHealth(): Record<string, unknown> {
    const a = this.admission.stats;
    const used = this.stage?.openSessions ?? 0;
    const missing = this.lastPlan ? this.missingLayers() : null;
    return {
      status: this.stopped
        ? "stopping"
        : !this.model
        ? "no_model"
        : this.planError
        ? "no_placement"
        : !this.lastPlan
        ? "starting"
        : missing
        ? "loading"
        : "ok",
      detail: this.planError ? `no placement: ${this.planError}` : missing ?? undefined,
      node: this.config.nodeId,
      model: this.model ? basename(this.model.id.split("@")[0]) : null,
      requests: {
        active: a.active,
        queued: a.queued,
        max_active: a.maxActive,
        max_queued: a.maxQueued,
      },
      kv_cache: this.stage
        ? {
          used,
          free: Math.max(0, this.config.maxSessions - used),
          total: this.config.maxSessions,
        }
        : null,
      placement: this.lastPlan?.stages.map((s) => ({ node: s.nodeId, from: s.from, to: s.to })) ??
        null,
    };
  }

  /** InferenceService.Generate: this agent is the head of the request. */
  private async *generate(
    req: GenerateRequest,
    signal: AbortSignal,
  ): AsyncIterable<GenerateResponse> {
    const model = this.model;
    if (!model) {
      throw new RpcFailure(
        "failed_precondition",
        "this agent serves no model (start it with --model)",
      );
    }
    if (req.model && !servesModel(model.id, req.model)) {
      throw new RpcFailure(
        "not_found",
        // The name GET /v1/models lists, so HTTP clients can use what the error suggests.
        `model ${req.model} is not served here (this cluster serves ` +
          `${basename(model.id.split("@")[0])})`,
      );
    }
    if (req.messages.length > 0 && req.prompt) {
      throw new RpcFailure("invalid_argument", "send either a prompt or chat messages, not both");
    }
    if (this.planError) throw new RpcFailure("unavailable", `no placement: ${this.planError}`);
    if (this.draining) {
      throw new RpcFailure(
        "unavailable",
        `${this.config.nodeId} is shutting down; ask another agent`,
      );
    }
    const requestId = req.requestId || crypto.randomUUID();
    if (this.requests.has(requestId)) {
      throw new RpcFailure("already_exists", `request ${requestId} is already running`);
    }
    let promptTokens: number[];
    if (req.messages.length > 0) {
      const chat = model.chat.render(req.messages.map(({ role, content }) => ({ role, content })));
      promptTokens = model.tokenizer.encode(chat.text, chat);
    } else {
      promptTokens = model.tokenizer.encode(req.prompt, { addBos: model.tokenizer.addBos });
    }
    if (promptTokens.length === 0) throw new RpcFailure("invalid_argument", "the prompt is empty");
    const maxContext = Math.min(this.config.contextSize, model.contextLength);
    if (promptTokens.length >= maxContext) {
      throw new PromptTooLongError(promptTokens.length, maxContext);
    }
    // Wait for a generation slot (admission control); a full queue fails at once.
    const release = await this.admission.acquire(signal);
    const abort = new AbortController();
    const onAbort = () => abort.abort();
    signal.addEventListener("abort", onAbort);
    this.requests.set(requestId, abort);
    this.counters.activeRequests++;
    const startedAt = performance.now();
    const tracker = new RequestTracker(this.events, {
      requestId,
      headNodeId: this.config.nodeId,
      model: model.id,
    });
    tracker.started(this.lastPlan?.stages.map((s) => s.nodeId));
    const queue: GenerateResponse[] = [];
    let wake: (() => void) | undefined;
    const push = (m: GenerateResponse) => {
      queue.push(m);
      wake?.();
    };
    const decoder = model.tokenizer.createDecoder();
    // Holds back text that may become a stop string, so clients never see part of one.
    const stops = new StopMatcher(req.stop);
    let stoppedBySequence = false;
    const head = new Head(this.chainProvider(), {
      recoveryTimeoutMs: 30_000,
      log: (m) => {
        this.counters.recoveries++;
        tracker.recovering(m);
        this.log("warn", m);
      },
    });
    const sampler = req.sampler;
    const running = head.generate({
      requestId,
      promptTokens,
      maxTokens: req.maxTokens > 0 ? req.maxTokens : maxContext,
      // KV caches only as long as this request can grow (cheaper to allocate under load).
      maxContext: req.maxTokens > 0
        ? Math.min(maxContext, promptTokens.length + req.maxTokens)
        : maxContext,
      signal: abort.signal,
      isEog: (id) => model.tokenizer.isEog(id),
      sampling: {
        temperature: sampler?.temperature,
        topK: sampler?.topK,
        topP: sampler?.topP,
        minP: sampler?.minP,
        repeatPenalty: sampler?.repeatPenalty,
        repeatLastN: sampler?.repeatLastN,
        frequencyPenalty: sampler?.frequencyPenalty,
        presencePenalty: sampler?.presencePenalty,
        seed: sampler?.seed === undefined ? undefined : Number(sampler.seed & 0xffffffffn),
        topLogprobs: sampler?.topLogprobs || undefined,
      },
      onToken: (token, index) => {
        this.counters.tokensGeneratedTotal++;
        this.metrics.onToken();
        tracker.token();
        const { text: piece, stopped: stop } = stops.push(
          model.tokenizer.isEog(token.id) ? "" : decoder.push(token.id),
        );
        if (stop) stoppedBySequence = true;
        push(create(GenerateResponseSchema, {
          requestId,
          index,
          tokenId: token.id,
          text: piece,
          logprob: token.logprob,
          topLogprobs: token.top.map((t) =>
            create(TokenLogprobSchema, {
              tokenId: t.id,
              logprob: t.logprob,
              text: model.tokenizer.decode([t.id]),
            })
          ),
          placement: index === 0 ? this.placementMessage() : undefined,
        }));
        return !stop;
      },
    });
    let done = false;
    let failure: unknown;
    running.then((result) => {
      if (result.finishReason === "cancelled" && abort.signal.reason === SHUTDOWN) {
        failure = new RpcFailure(
          "unavailable",
          `${this.config.nodeId} shut down after ${result.tokens.length} tokens of this ` +
            `generation (its --shutdown-grace ran out); the output is incomplete`,
        );
        tracker.finished(RequestPhase.FAILED, undefined, (failure as Error).message);
        return;
      }
      let tail = "";
      if (!stoppedBySequence) {
        const last = stops.push(decoder.flush());
        stoppedBySequence = last.stopped;
        tail = last.stopped ? last.text : last.text + stops.flush();
      }
      const reason = stoppedBySequence
        ? FinishReason.STOP_SEQUENCE
        : result.finishReason === "cancelled"
        ? FinishReason.CANCELLED
        : result.finishReason === "stop"
        ? FinishReason.STOP
        : FinishReason.LENGTH;
      const served = result.chains.at(-1);
      push(create(GenerateResponseSchema, {
        requestId,
        index: result.tokens.length,
        text: tail,
        finishReason: reason,
        // The chain that served the last token: after a recovery it differs from the first.
        placement: served
          ? create(PlacementSchema, {
            model: model.id,
            totalLayers: model.nLayers,
            epoch: this.epoch,
            stages: served.map((s) =>
              create(StageAssignmentSchema, { nodeId: s.nodeId, fromLayer: s.from, toLayer: s.to })
            ),
          })
          : undefined,
        usage: create(GenerateUsageSchema, {
          promptTokens: promptTokens.length,
          completionTokens: result.tokens.length,
          timeToFirstTokenMs: result.timeToFirstTokenMs,
          decodeTokensPerSecond: result.tokens.length > 1
            ? (result.tokens.length - 1) / (result.decodeMs / 1000)
            : 0,
          recoveries: result.failures.length,
        }),
      }));
      tracker.finished(
        reason === FinishReason.CANCELLED ? RequestPhase.CANCELLED : RequestPhase.COMPLETED,
        result.tokens.length > 1 ? (result.tokens.length - 1) / (result.decodeMs / 1000) : 0,
      );
    }, (e) => {
      failure = e;
      tracker.finished(RequestPhase.FAILED, undefined, (e as Error).message ?? String(e));
    }).finally(() => {
      done = true;
      wake?.();
    });
    try {
      for (;;) {
        while (queue.length) yield queue.shift()!;
        if (failure) throw failure;
        if (done) break;
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
    } finally {
      abort.abort();
      signal.removeEventListener("abort", onAbort);
      this.requests.delete(requestId);
      this.counters.activeRequests--;
      release();
      this.metrics.onRequest((performance.now() - startedAt) / 1000);
      tracker.finished(RequestPhase.CANCELLED, undefined, "the client went away");
    }
  }
}

/** A remote link whose transport is created on first use. */
class LazyRemoteLink implements StageLink {
  constructor(
    private readonly c: StageCandidate,
    private readonly transport: () => Promise<RpcTransport>,
    private readonly model: string,
  ) {}
  get nodeId() {
    return this.c.id;
  }
  get version() {
    return this.c.version;
  }
  get from() {
    return this.c.from;
  }
  get to() {
    return this.c.to;
  }
  async openSession(sessionId: string, maxContext: number) {
    const link = new RemoteStageLink(this.c.id, this.c.from, this.c.to, await this.transport(), {
      model: this.model,
      epoch: 0n,
    });
    return link.openSession(sessionId, maxContext);
  }
}

/** Services of the RPC port that grpc.health.v1 answers for by name. */
const RPC_SERVICES = [DiscoveryService, NodeService, ClusterService, TransferService];

/** The abort reason of generations cut off by shutdown (they end with an error, not a finish). */
const SHUTDOWN = new Error("the agent is shutting down");

/** Whether `name` names the served model: its id, file name, or file name without ".gguf". */
function servesModel(id: string, name: string): boolean {
  const file = basename(id.split("@")[0]);
  return name === id || name === file || name === file.replace(/\.gguf$/i, "");
}

/**
 * Memory a model needs per layer on an agent: weights plus a KV reservation for a few concurrent
 * sessions of `contextSize` positions (more sessions are admission control's job).
 */
export function agentFootprint(
  file: GGUFFile,
  contextSize: number,
  maxSessions: number,
  config: LlamaConfig = configFromFile(file),
): ModelFootprint {
  const ctx = Math.min(contextSize, config.contextLength);
  const kvPerLayer = 2 * ctx * config.nKVHeads * config.headDim * 4 * Math.min(maxSessions, 4);
  return footprintFromIndex(file, config.nLayers, kvPerLayer);
}

/** What an agent needs to serve an opened model file: tokenizer, chat template, footprint. */
function servedModel(
  id: string,
  file: GGUFFile,
  contextSize: number,
  maxSessions: number,
): ServedModel {
  const config = configFromFile(file);
  const tokenizer = tokenizerFromMetadata(file.metadata);
  return {
    id,
    file,
    tokenizer,
    chat: ChatTemplate.fromMetadata(file.metadata, tokenizer),
    nLayers: config.nLayers,
    contextLength: config.contextLength,
    footprint: agentFootprint(file, contextSize, maxSessions, config),
  };
}

/** Open a model file and read its index (not its tensors), tokenizer and footprint. */
async function loadModelIndex(
  path: string,
  contextSize: number,
  maxSessions: number,
): Promise<ServedModel> {
  const file = await openModelFile(path);
  try {
    return servedModel(`${basename(path)}@${file.fileSize}`, file, contextSize, maxSessions);
  } catch (e) {
    file.close();
    throw e;
  }
}

export { NodeState };
