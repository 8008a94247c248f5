/**
 * The agent: one process that composes gossip membership, the RPC services, a pipeline stage
 * (the layers placement gives it) and the head role for requests it receives. Each mechanism
 * lives in its own room under cluster/agent/; this file only builds and connects them.
 *
 * Placement is a pure function of membership (cluster/placement), so every agent computes the
 * same plan — and the same placement epoch — from the same gossip view and loads its own range;
 * heads build chains from what agents *announce* they host, so a plan in transition never mixes
 * half-loaded stages.
 */
import type { Backend } from "../kernels/backend.ts";
import { parseBackendName, selectBackend } from "../kernels/select.ts";
import type { AgentConfig } from "./agent_config.ts";
import { calibrate } from "./placement/calibrate.ts";
import { type RpcServer, startRpcServer, type TcpPlane } from "./rpc/mod.ts";
import { loadApiTls, tlsFilesFromOptions } from "./tls/mod.ts";
import {
  AgentMetrics,
  type MetricsServer,
  setTraceAttributes,
  startMetricsServer,
  traceServerInterceptor,
} from "./telemetry/mod.ts";
import { LeveledLog } from "./events/mod.ts";
import { Admission, type ApiServer, startApiServer } from "./api/mod.ts";
import { fileMtime, TransferManager } from "./transfer/mod.ts";
import type { StageHost } from "./pipeline/mod.ts";
import { joinHostPort, type Member } from "./gossip/mod.ts";
import { type AgentLogger, AgentState } from "./agent/state.ts";
import { loadModelIndex, type ServedModel } from "./agent/served_model.ts";
import { Peers } from "./agent/peers.ts";
import { Observer } from "./agent/observe.ts";
import { StageRoom } from "./agent/stage.ts";
import { PlacementLoop } from "./agent/placement_loop.ts";
import { HeadService } from "./agent/head_service.ts";
import { agentRoutes } from "./agent/routes.ts";
import { apiHealth, readiness } from "./agent/health.ts";
import { textGenerator } from "./agent/api_adapter.ts";
import { transferHost } from "./agent/transfer_host.ts";
import { handOverAtShutdown } from "./agent/commands.ts";
import { drainAndLeave, joinInBackground, startGossip } from "./agent/lifecycle.ts";
import { startDataPlane } from "./agent/data_plane.ts";
import { RequestForwarder } from "./agent/forward_rpc.ts";
import { httpForwarder } from "./agent/forward_http.ts";
import { apiTlsTrust } from "./agent/forward_tls.ts";
import { watchSuperseded } from "./agent/superseded.ts";

export type { AgentLogger } from "./agent/state.ts";
export { agentFootprint } from "./agent/served_model.ts";
export { ModelId } from "./model_id.ts";

/** A running agent. */
export class Agent {
  private rpc?: RpcServer;
  private plane?: TcpPlane;
  private metricsServer?: MetricsServer;
  private api?: ApiServer;
  /** Prometheus metrics (cluster/telemetry), served on the metrics port; read on scrape. */
  readonly metrics: AgentMetrics;
  private readonly peers: Peers;
  private readonly observe: Observer;
  private readonly stageRoom: StageRoom;
  private readonly loop: PlacementLoop;
  private readonly head: HeadService;
  /** Passes requests on to serving agents while this one serves no model (--no-model). */
  private readonly forward: RequestForwarder;
  /** The member announcement (incarnation) each peer's certificate was last checked for. */
  private readonly verified = new Map<string, number>();
  /**
   * Settles with the reason when the agent cannot go on and must be stopped: its node id stayed
   * held by a live member elsewhere for the whole patience (cluster/agent/lifecycle.ts).
   */
  readonly fatal: Promise<Error>;
  private giveUp!: (e: Error) => void;

  private constructor(private readonly s: AgentState) {
    this.fatal = new Promise((resolve) => this.giveUp = resolve);
    this.peers = new Peers(s.config);
    this.observe = new Observer(s, (plan) => this.loop.message(plan));
    this.metrics = new AgentMetrics(this.observe.metricsSource());
    this.stageRoom = new StageRoom(s, this.observe, this.metrics, () => this.loop.schedule());
    this.loop = new PlacementLoop(s, this.stageRoom, this.observe);
    this.head = new HeadService(s, this.loop, this.peers, this.metrics);
    this.forward = new RequestForwarder(s, this.peers, this.metrics);
  }

  /** Start every part of an agent and join the cluster. */
  static async start(cfg: AgentConfig, log: AgentLogger = () => {}): Promise<Agent> {
    const leveled = new LeveledLog(log, cfg.logLevel);
    log = leveled.log;
    // The API's certificate is checked before anything starts: a wrong file ends start-up.
    const apiTls = cfg.apiTlsCert
      ? await loadApiTls({ cert: cfg.apiTlsCert, key: cfg.apiTlsKey! })
      : undefined;
    // The model's index first: a corrupt file ends start-up before anything is allocated.
    let model: ServedModel | undefined;
    if (cfg.model) model = await loadModelIndex(cfg.model, cfg.contextSize, cfg.maxSessions);
    const { backend, reason } = await selectBackend(parseBackendName(cfg.backend), {
      threads: cfg.threads,
    });
    log("info", "backend selected", { backend: backend.name, device: backend.device, reason });
    const speed = cfg.speed ?? await calibrate(backend, 100);
    if (cfg.speed) log("info", "speed set by --speed", { gflops: speed });
    else log("info", "calibrated", { gflops: Math.round(speed * 100) / 100 });
    const gossip = await startGossip(cfg, backend, reason, speed, model, log);
    const s = new AgentState(cfg, backend, reason, speed, gossip, log, leveled);
    s.model = model;
    s.modelPath = model ? cfg.model : undefined;
    s.modelMtime = model && cfg.model ? await fileMtime(cfg.model) : undefined;
    s.admission = new Admission(cfg.maxRequests, cfg.queueSize);
    s.stateChangedAt.set(cfg.nodeId, Date.now());
    const agent = new Agent(s);
    const tls = tlsFilesFromOptions({ tlsCert: cfg.tlsCert, tlsKey: cfg.tlsKey, tlsCa: cfg.tlsCa });
    s.transfer = new TransferManager(
      transferHost(s, agent.loop, agent.stageRoom, agent.observe),
      {
        cacheDir: cfg.cacheDir,
        rateLimit: cfg.transferRateLimit,
        tls,
        tlsPeerName: cfg.tlsPeerName,
        // Test hook (README "Model distribution"): corrupt served chunks on purpose.
        corruptChunks: Deno.env.get("DLLM_TEST_CORRUPT_CHUNKS"),
        dataEndpoint: () =>
          agent.plane ? joinHostPort(cfg.advertiseAddress, agent.plane.port) : undefined,
      },
    );
    s.transfer.scanCache().catch((e) =>
      log("warn", "cannot read the model cache", { dir: cfg.cacheDir, error: String(e) })
    );
    const trust = await apiTlsTrust(cfg.tlsCa, apiTls);
    try {
      agent.rpc = await startRpcServer({
        host: cfg.bind,
        port: cfg.rpcPort,
        tls,
        insecureBindAll: cfg.insecureBindAll,
        routes: (r) =>
          agentRoutes(r, {
            s,
            loop: agent.loop,
            peers: agent.peers,
            observe: agent.observe,
            head: agent.head,
            metrics: agent.metrics,
            forward: agent.forward,
            stop: () => agent.stop(),
          }),
        interceptors: [traceServerInterceptor],
        warn: (msg, fields) => log("warn", msg, fields),
      });
      // Without TLS, chunks and activations also go over plain TCP (agent/data_plane.ts).
      if (!tls) agent.plane = await startDataPlane(s, agent.head, agent.loop, agent.metrics);
    } catch (e) {
      await agent.rpc?.close(500);
      await gossip.shutdown();
      backend.dispose();
      throw e;
    }
    // Load figures change the metadata about once a second on a busy stage: such an update is
    // for routing only (heads read it from gossip), not a membership event to publish, re-plan
    // on, or re-check a certificate for.
    const shapes = new Map<string, string>();
    for (const type of ["join", "leave", "dead", "update", "alive"] as const) {
      gossip.on(type, (e) => {
        const shape = JSON.stringify({ ...e.member.meta, load: undefined });
        const same = shapes.get(e.member.id) === shape;
        shapes.set(e.member.id, shape);
        if (type === "update" && same) return;
        agent.observe.memberEvent(e.type, e.member);
        if (type !== "update" || e.member.id !== cfg.nodeId) {
          log("info", `member ${type}`, { node: e.member.id });
        }
        if (e.type === "dead" || e.type === "leave") agent.peers.drop(e.member.id);
        else agent.verifyPeer(e.member);
        if (e.type === "join") agent.peers.rejoined(e.member.id);
        agent.loop.schedule();
      });
    }
    gossip.on("suspect", (e) => {
      agent.observe.memberEvent(e.type, e.member);
      // Suspects leave the plan (placement_loop.modelMembers): every agent re-plans on the
      // suspicion, not only those where another event happened to come during it.
      agent.loop.schedule();
    });
    // Our id taken over by a live member elsewhere while this agent was away: a zombie else.
    watchSuperseded(gossip, cfg.nodeId, (why) => {
      s.idConflict = why;
      agent.loop.replan();
      agent.giveUp(new Error(why));
    });
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
        readiness: () => readiness(s, agent.loop),
        warn: (msg, fields) => log("warn", msg, fields),
      });
      agent.api = await startApiServer({
        host: cfg.bind,
        port: cfg.httpPort,
        apiKey: cfg.apiKey,
        generator: textGenerator(s, agent.head, () => apiHealth(s, agent.loop)),
        headersTimeoutMs: cfg.httpHeaderTimeout,
        bodyTimeoutMs: cfg.httpBodyTimeout,
        maxConnections: cfg.httpMaxConnections,
        corsOrigins: cfg.corsOrigin,
        forward: httpForwarder(s, agent.peers, agent.forward, agent.metrics, trust),
        tls: apiTls,
        rpcTls: tls !== undefined,
        log,
      });
    } catch (e) {
      await agent.stop();
      throw e;
    }
    const published = gossip.localNode.meta!;
    const ports = {
      rpcPort: agent.rpcPort,
      metricsPort: agent.metricsPort,
      httpPort: agent.httpPort,
      dataPort: agent.plane?.port ?? 0,
    };
    // Asked for port 0: peers (and Prometheus discovery) must learn the ports the OS picked.
    if (Object.entries(ports).some(([k, v]) => published[k as keyof typeof ports] !== v)) {
      gossip.updateMetadata({ ...published, ...ports });
    }
    // The first plan waits for the first join attempt: it may find our id taken.
    joinInBackground(s, {
      // Our id is another member's (or ours again): stand aside, or take our place, at once.
      onConflict: () => agent.loop.replan(),
      onGiveUp: (message) => agent.giveUp(new Error(message)),
    }).finally(() => agent.loop.schedule());
    return agent;
  }

  /**
   * With mTLS, check a member's certificate before trusting it with layers: a member our CA
   * does not sign is left out of placement and chains (its layers re-placed like a dead one's),
   * and the log names the TLS cause. A later announcement is checked again.
   */
  private verifyPeer(member: Member): void {
    const s = this.s;
    if (member.id === s.nodeId || !s.config.tlsCa) return;
    const seen = this.verified.get(member.id);
    if (seen === member.incarnation) return;
    this.verified.set(member.id, member.incarnation);
    this.peers.tlsRefusal(member).then((refusal) => {
      const change = this.peers.tlsVerdict(member.id, refusal, s.untrusted);
      if (change === "refused") {
        s.log("warn", "member refused by TLS; its layers are placed elsewhere", {
          node: member.id,
          error: refusal,
        });
        this.observe.planReason = `node ${member.id} untrusted (TLS)`;
      } else if (change === "trusted") {
        s.log("info", "member trusted again", { node: member.id });
      }
      if (change) this.loop.schedule();
    }, () => {});
  }

  /** The configuration the agent runs with. */
  get config(): AgentConfig {
    return this.s.config;
  }

  /** The compute backend (WASM after a GPU fallback). */
  get backend(): Backend {
    return this.s.backend;
  }

  /** The RPC port actually bound. */
  get rpcPort(): number {
    return this.rpc?.port ?? this.s.config.rpcPort;
  }

  /** The metrics port actually bound. */
  get metricsPort(): number {
    return this.metricsServer?.port ?? this.s.config.metricsPort;
  }

  /** The HTTP API port actually bound. */
  get httpPort(): number {
    return this.api?.port ?? this.s.config.httpPort;
  }

  /** The gossip address actually bound. */
  get gossipAddr(): string {
    return this.s.gossip.transport.addr;
  }

  /** The stage hosted now, if any. */
  get hosted(): StageHost | undefined {
    return this.s.stage;
  }

  /** Leave the cluster gracefully and stop every listener. */
  async stop(): Promise<void> {
    const s = this.s;
    if (s.stopped || s.draining) return;
    handOverAtShutdown(s, this.loop, this.observe);
    await drainAndLeave(s, () => this.stageRoom.openSessions);
    this.loop.stop();
    this.stageRoom.stop();
    await s.gossip.shutdown();
    await this.plane?.close();
    await this.rpc?.close(500);
    await this.metricsServer?.close();
    await this.api?.close();
    this.peers.closeAll();
    s.stage?.closeAll();
    s.transfer?.close();
    s.model?.file.close();
    s.backend.dispose();
  }
}
