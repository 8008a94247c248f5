/**
 * The agent: one process that composes gossip membership, the RPC services, a pipeline stage
 * (the layers placement gives it) and the head role for requests it receives.
 *
 * Placement is a pure function of membership (cluster/placement), so every agent computes the
 * same plan from the same gossip view and loads its own range; heads build chains from what
 * agents *announce* they host, so a plan in transition never mixes half-loaded stages.
 */
import type { ConnectRouter } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { basename } from "node:path";
import type { Backend } from "../kernels/backend.ts";
import { parseBackendName, selectBackend } from "../kernels/select.ts";
import { openModelFile } from "../model/engine.ts";
import type { GGUFFile } from "../model/gguf/mod.ts";
import { LlamaStage } from "../model/llama.ts";
import { readConfig } from "../model/config.ts";
import type { Tokenizer } from "../model/tokenizer/mod.ts";
import { tokenizerFromMetadata } from "../model/tokenizer/mod.ts";
import {
  DiscoveryService,
  FinishReason,
  type GenerateRequest,
  type GenerateResponse,
  GenerateResponseSchema,
  GenerateUsageSchema,
  InferenceService,
  NodeService,
  NodeState,
  PlacementSchema,
  StageAssignmentSchema,
  TokenLogprobSchema,
} from "../proto/mod.ts";
import type { AgentConfig } from "./agent_config.ts";
import {
  discoveryService,
  measureResources,
  MetricsSampler,
  nodeService,
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
import { VERSION } from "../cli/version.ts";

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
  /** Counters for metrics and health. */
  readonly counters = {
    activeRequests: 0,
    tokensGeneratedTotal: 0,
    framesProcessedTotal: 0,
    recoveries: 0,
  };

  private constructor(
    readonly config: AgentConfig,
    readonly backend: Backend,
    readonly backendReason: string,
    readonly speed: number,
    readonly model: ServedModel | undefined,
    readonly gossip: Memberlist,
    private rpc: RpcServer | undefined,
    private readonly log: AgentLogger,
  ) {}

  /** Start every part of an agent and join the cluster. */
  static async start(cfg: AgentConfig, log: AgentLogger = () => {}): Promise<Agent> {
    const { backend, reason } = await selectBackend(parseBackendName(cfg.backend), {
      threads: cfg.threads,
    });
    log("info", "backend selected", { backend: backend.name, device: backend.device, reason });
    let model: ServedModel | undefined;
    if (cfg.model) model = await loadModelIndex(cfg.model, cfg.contextSize, cfg.maxSessions);
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
        adapter: backend.device.slice(0, 120),
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
    try {
      agent.rpc = await startRpcServer({
        host: cfg.bind,
        port: cfg.rpcPort,
        tls: tlsFilesFromOptions({ tlsCert: cfg.tlsCert, tlsKey: cfg.tlsKey, tlsCa: cfg.tlsCa }),
        insecureBindAll: cfg.insecureBindAll,
        routes: (r) => agent.routes(r),
      });
    } catch (e) {
      await gossip.shutdown();
      backend.dispose();
      throw e;
    }
    if (agent.rpc.port !== cfg.rpcPort) {
      // Asked for port 0: peers must learn the port the OS picked.
      gossip.updateMetadata({ ...gossip.localNode.meta!, rpcPort: agent.rpc.port });
    }
    for (const type of ["join", "leave", "dead", "update", "alive"] as const) {
      gossip.on(type, (e) => {
        if (type !== "update" || e.member.id !== cfg.nodeId) {
          log("info", `member ${type}`, { node: e.member.id });
        }
        if (e.type === "dead" || e.type === "leave") agent.dropTransport(e.member.id);
        agent.schedulePlan();
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
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.planTimer);
    for (const c of this.requests.values()) c.abort();
    try {
      await this.gossip.leave(2000);
    } catch (e) {
      this.log("warn", "leave failed", { error: String(e) });
    }
    await this.gossip.shutdown();
    await this.rpc?.close(500);
    for (const { transport } of this.transports.values()) transport.close();
    this.stage?.closeAll();
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
      old?.closeAll();
      this.announce();
      return;
    }
    const t0 = performance.now();
    try {
      const stage = await LlamaStage.load(this.model.file, this.backend, {
        ...want,
        maxBatch: 512,
      });
      this.stage = new StageHost(stage, this.model.id, {
        maxSessions: this.config.maxSessions,
        defaultContext: Math.min(this.config.contextSize, this.model.contextLength),
      });
      old?.closeAll();
      this.log("info", "stage loaded", {
        layers: `[${want.from},${want.to})`,
        bytes: stage.weightBytes,
        ms: Math.round(performance.now() - t0),
      });
      this.announce();
    } catch (e) {
      this.log("error", "stage load failed", {
        layers: `[${want.from},${want.to})`,
        error: (e as Error).message,
      });
    }
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

  /** A (cached) RPC transport to a member. */
  private async transportTo(member: Member): Promise<RpcTransport> {
    const meta = member.meta!;
    const endpoint = `${meta.addresses[0] ?? member.addr.split(":")[0]}:${meta.rpcPort}`;
    const cached = this.transports.get(member.id);
    if (cached && cached.endpoint === endpoint) return cached.transport;
    cached?.transport.close();
    const transport = await createRpcTransport(endpoint, { tls: this.clientTls() });
    this.transports.set(member.id, { endpoint, transport });
    return transport;
  }

  private clientTls() {
    const c = this.config;
    return c.tlsCert && c.tlsKey && c.tlsCa
      ? { cert: c.tlsCert, key: c.tlsKey, ca: c.tlsCa }
      : undefined;
  }

  /** The chain provider heads use: announced ranges of live members. */
  private chainProvider(): GossipChainProvider {
    const model = this.model!;
    const byId = new Map<string, Member>();
    return new GossipChainProvider({
      model: model.id,
      nLayers: model.nLayers,
      candidates: () => {
        byId.clear();
        const out: StageCandidate[] = [];
        for (const m of this.gossip.members()) {
          const h = m.meta?.hosted;
          if (!h || (m.status !== "alive" && m.status !== "suspect")) continue;
          byId.set(m.id, m);
          out.push({ id: m.id, status: m.status, model: h.model, from: h.from, to: h.to });
        }
        return out;
      },
      link: (c): StageLink => {
        if (c.id === this.config.nodeId && this.stage) return new LocalStageLink(c.id, this.stage);
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
    });
    const sampler = new MetricsSampler(this.config.nodeId, () => ({
      activeSessions: this.stage?.openSessions ?? 0,
      activeRequests: this.counters.activeRequests,
      tokensGeneratedTotal: this.counters.tokensGeneratedTotal,
      framesProcessedTotal: this.counters.framesProcessedTotal,
    }));
    r.service(DiscoveryService, discoveryService(view));
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
    r.service(InferenceService, {
      forward: forwardHandler({
        host: () => this.stage,
        epoch: () => 0n,
        onFrame: () => this.counters.framesProcessedTotal++,
      }),
      generate: (req, ctx) => this.generate(req, ctx.signal),
      cancel: (req) => {
        const c = this.requests.get(req.requestId);
        c?.abort();
        return { cancelled: c !== undefined };
      },
    });
  }

  private readiness(): { serving: boolean; detail?: string } {
    if (this.stopped) return { serving: false, detail: "agent is stopping" };
    if (this.model && !this.lastPlan) {
      return { serving: false, detail: "no placement yet (waiting for enough agents)" };
    }
    return { serving: true };
  }

  private placementMessage() {
    const plan = this.lastPlan;
    if (!plan || !this.model) return undefined;
    return create(PlacementSchema, {
      model: this.model.id,
      totalLayers: plan.nLayers,
      epoch: this.epoch,
      stages: plan.stages.map((s) =>
        create(StageAssignmentSchema, { nodeId: s.nodeId, fromLayer: s.from, toLayer: s.to })
      ),
    });
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
    if (req.model && req.model !== model.id && req.model !== basename(model.id.split("@")[0])) {
      throw new RpcFailure(
        "not_found",
        `model ${req.model} is not served here (this cluster serves ${model.id})`,
      );
    }
    if (req.messages.length > 0) {
      throw new RpcFailure(
        "unimplemented",
        "chat messages are not supported by Generate yet; send a prompt",
      );
    }
    if (this.planError) throw new RpcFailure("unavailable", `no placement: ${this.planError}`);
    const requestId = req.requestId || crypto.randomUUID();
    if (this.requests.has(requestId)) {
      throw new RpcFailure("already_exists", `request ${requestId} is already running`);
    }
    const promptTokens = model.tokenizer.encode(req.prompt, { addBos: model.tokenizer.addBos });
    if (promptTokens.length === 0) throw new RpcFailure("invalid_argument", "the prompt is empty");
    const maxContext = Math.min(this.config.contextSize, model.contextLength);
    if (promptTokens.length >= maxContext) {
      throw new RpcFailure(
        "invalid_argument",
        `the prompt has ${promptTokens.length} tokens; the context holds ${maxContext}`,
      );
    }
    const abort = new AbortController();
    const onAbort = () => abort.abort();
    signal.addEventListener("abort", onAbort);
    this.requests.set(requestId, abort);
    this.counters.activeRequests++;
    const queue: GenerateResponse[] = [];
    let wake: (() => void) | undefined;
    const push = (m: GenerateResponse) => {
      queue.push(m);
      wake?.();
    };
    const decoder = model.tokenizer.createDecoder();
    const stops = req.stop.filter((s) => s.length > 0);
    let text = "";
    let stoppedBySequence = false;
    const head = new Head(this.chainProvider(), {
      recoveryTimeoutMs: 30_000,
      log: (m) => {
        this.counters.recoveries++;
        this.log("warn", m);
      },
    });
    const sampler = req.sampler;
    const running = head.generate({
      requestId,
      promptTokens,
      maxTokens: req.maxTokens > 0 ? req.maxTokens : maxContext,
      maxContext,
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
        let piece = model.tokenizer.isEog(token.id) ? "" : decoder.push(token.id);
        text += piece;
        let stop = false;
        for (const s of stops) {
          const at = text.indexOf(s, Math.max(0, text.length - piece.length - s.length));
          if (at >= 0) {
            // Cut the stop string (and anything after it) from what the client sees.
            piece = piece.slice(0, Math.max(0, piece.length - (text.length - at)));
            stop = true;
            stoppedBySequence = true;
            break;
          }
        }
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
      const reason = stoppedBySequence
        ? FinishReason.STOP_SEQUENCE
        : result.finishReason === "cancelled"
        ? FinishReason.CANCELLED
        : result.finishReason === "stop"
        ? FinishReason.STOP
        : FinishReason.LENGTH;
      const tail = decoder.flush();
      push(create(GenerateResponseSchema, {
        requestId,
        index: result.tokens.length,
        text: stoppedBySequence ? "" : tail,
        finishReason: reason,
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
    }, (e) => (failure = e)).finally(() => {
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

/**
 * Memory a model needs per layer on an agent: weights plus a KV reservation for a few concurrent
 * sessions of `contextSize` positions (more sessions are admission control's job).
 */
export function agentFootprint(file: GGUFFile, contextSize: number, maxSessions: number): ModelFootprint {
  const embd = file.tensor("token_embd.weight");
  const config = readConfig(file.metadata, embd?.dims[1] ?? 0);
  const ctx = Math.min(contextSize, config.contextLength);
  const kvPerLayer = 2 * ctx * config.nKVHeads * config.headDim * 4 * Math.min(maxSessions, 4);
  return footprintFromIndex(file, config.nLayers, kvPerLayer);
}

/** Read a model's index (not its tensors), tokenizer and footprint. */
async function loadModelIndex(path: string, contextSize: number, maxSessions: number): Promise<ServedModel> {
  const file = await openModelFile(path);
  try {
    const embd = file.tensor("token_embd.weight");
    const config = readConfig(file.metadata, embd?.dims[1] ?? 0);
    return {
      id: `${basename(path)}@${file.fileSize}`,
      file,
      tokenizer: tokenizerFromMetadata(file.metadata),
      nLayers: config.nLayers,
      contextLength: config.contextLength,
      footprint: agentFootprint(file, contextSize, maxSessions),
    };
  } catch (e) {
    file.close();
    throw e;
  }
}

export { NodeState };
