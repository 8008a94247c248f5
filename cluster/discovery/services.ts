/**
 * Handlers of DiscoveryService and NodeService over a {@linkcode MembershipView}, a resources
 * measurement and a metrics sampler. Register them on the RPC server:
 *
 * ```ts
 * startRpcServer({ routes: (r) => {
 *   r.service(DiscoveryService, discoveryService(view));
 *   r.service(NodeService, nodeService({ view, resources: () => measureResources(), metrics }));
 * }});
 * ```
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  type ClusterMetrics,
  ClusterMetricsSchema,
  type DiscoveryService,
  HealthCheckResponse_ServingStatus,
  type NodeInfo,
  type NodeMetrics,
  type NodeService,
  NodeState,
  type Placement,
  type ResourceInfo,
} from "../../proto/mod.ts";
import { RpcFailure } from "../rpc/errors.ts";
import { ModelId } from "../model_id.ts";
import type { MembershipView } from "./membership.ts";

/** States a listing shows unless asked otherwise: the members worth talking to. */
const LIVE = new Set([NodeState.ALIVE, NodeState.SUSPECT]);

const byId = (a: NodeInfo, b: NodeInfo) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/** Cluster-wide request counters a head knows (zeros when omitted). */
export interface RequestTotals {
  /** Requests in flight. */
  activeRequests: number;
  /** Tokens generated since start. */
  tokensGeneratedTotal: number;
  /** Physical and available memory of the members that answered (gossip does not carry it). */
  memoryTotalBytes?: number;
  memoryAvailableBytes?: number;
}

/**
 * Totals over `nodes`: counts by state, and capacity (cores, memory, budget) of the alive ones,
 * the budget of drained ones left out; layers from the placement, counting only stages whose node
 * is alive.
 */
export function clusterMetrics(
  nodes: NodeInfo[],
  placement?: Placement,
  totals?: RequestTotals,
): ClusterMetrics {
  const m = create(ClusterMetricsSchema, { nodesTotal: nodes.length });
  const alive = new Set<string>();
  for (const n of nodes) {
    if (n.state === NodeState.ALIVE) m.nodesAlive++;
    else if (n.state === NodeState.SUSPECT) m.nodesSuspect++;
    else if (n.state === NodeState.DEAD) m.nodesDead++;
    else if (n.state === NodeState.LEFT) m.nodesLeft++;
    if (n.state !== NodeState.ALIVE) continue;
    // A node whose stage failed to load serves none of its planned layers.
    if (!n.stageError) alive.add(n.id);
    const r = n.resources;
    if (!r) continue;
    m.cpuCoresTotal += r.cpuCores;
    m.memoryTotalBytes += r.memoryTotalBytes;
    m.memoryAvailableBytes += r.memoryAvailableBytes;
    // A drained node's budget is offered to no placement (its machine's memory still counts).
    if (!n.drained) m.memoryBudgetBytes += r.memoryBudgetBytes;
  }
  if (placement) {
    m.layersTotal = placement.totalLayers;
    for (const s of placement.stages) {
      if (alive.has(s.nodeId)) m.layersPlaced += Math.max(0, s.toLayer - s.fromLayer);
    }
  }
  m.activeRequests = totals?.activeRequests ?? 0;
  m.tokensGeneratedTotal = BigInt(totals?.tokensGeneratedTotal ?? 0);
  if (totals?.memoryTotalBytes !== undefined) m.memoryTotalBytes = BigInt(totals.memoryTotalBytes);
  if (totals?.memoryAvailableBytes !== undefined) {
    m.memoryAvailableBytes = BigInt(totals.memoryAvailableBytes);
  }
  return m;
}

function checkPort(field: string, p: number) {
  if (p > 65535) {
    throw new RpcFailure("invalid_argument", `node.${field} ${p} is not a port (0–65535)`);
  }
}

/** Check a node announced by RegisterWithCluster; throws INVALID_ARGUMENT naming the field. */
export function validateRegistration(node: NodeInfo | undefined): NodeInfo {
  if (!node) throw new RpcFailure("invalid_argument", "RegisterWithCluster needs node");
  if (!node.id.trim()) {
    throw new RpcFailure("invalid_argument", "node.id is empty; set --node-id on the new node");
  }
  if (node.addresses.length === 0) {
    throw new RpcFailure(
      "invalid_argument",
      `node.addresses of "${node.id}" is empty; peers could not reach it (set --advertise-address)`,
    );
  }
  if (node.gossipPort === 0) {
    throw new RpcFailure(
      "invalid_argument",
      `node.gossip_port of "${node.id}" is 0; set --gossip-port`,
    );
  }
  checkPort("rpc_port", node.rpcPort);
  checkPort("gossip_port", node.gossipPort);
  checkPort("metrics_port", node.metricsPort);
  checkPort("http_port", node.httpPort);
  return node;
}

/** Options of {@linkcode discoveryService}. */
export interface DiscoveryOptions {
  /** Cluster-wide request counters (and memory) for GetClusterInfo's metrics. */
  requestTotals?: () => RequestTotals | Promise<RequestTotals>;
}

/**
 * Whether a member announcing model id `hosted` serves the model a client calls `name`: the
 * names Generate takes (ModelId.matches: the id, the file name, it without ".gguf"). Only the
 * full id matched, so `stories260K`, which generates, found no node.
 */
function hosts(hosted: string, name: string): boolean {
  return hosted === name || ModelId.parse(hosted).matches(name);
}

/** DiscoveryService handlers answering from `view`. */
export function discoveryService(
  view: MembershipView,
  opts: DiscoveryOptions = {},
): ServiceImpl<typeof DiscoveryService> {
  return {
    discoverNodes(req) {
      const states = req.states.length > 0 ? new Set(req.states) : LIVE;
      const nodes = view.members()
        .filter((n) => states.has(n.state))
        .filter((n) => !req.model || (n.hosted !== undefined && hosts(n.hosted.model, req.model)))
        .sort(byId);
      return { nodes, responderId: view.local().id };
    },
    async registerWithCluster(req) {
      const node = validateRegistration(req.node);
      const { gossipSeeds } = await view.register(node);
      return {
        clusterName: view.clusterName,
        responder: view.local(),
        members: view.members().sort(byId),
        gossipSeeds,
      };
    },
    async leaveCluster(req) {
      const state = await view.leave(req.nodeId, req.reason || "requested over RPC");
      return { state };
    },
    async getClusterInfo(req) {
      const all = view.members().sort(byId);
      const nodes = req.includeDeparted ? all : all.filter((n) => LIVE.has(n.state));
      const placement = view.placement?.();
      const totals = await opts.requestTotals?.();
      return {
        clusterName: view.clusterName,
        responderId: view.local().id,
        nodes,
        metrics: clusterMetrics(all, placement, totals),
        placement,
        placementError: view.placementError?.() ?? "",
      };
    },
  };
}

/** Readiness of the node, for HealthCheck. */
export interface Readiness {
  /** Whether it takes work now. */
  serving: boolean;
  /** Why not, when not serving (e.g. "loading layers 8..16"). */
  detail?: string;
}

/** What NodeService answers from. */
export interface NodeServiceDeps {
  /** Membership view (the local node and its peers). */
  view: MembershipView;
  /** Measure resources now (e.g. `() => measureResources(opts)`). */
  resources: () => ResourceInfo;
  /** Take a load sample now (e.g. a MetricsSampler's `sample`). */
  metrics: () => NodeMetrics;
  /** Readiness; default: serving while the local node is ALIVE. */
  readiness?: () => Readiness;
  /** Agent start, ms since the epoch; default: when the handlers were made. */
  startedAt?: number;
  /** StreamMetrics streams served at once (each peer watching this one holds one). Default 256. */
  maxStreams?: number;
}

/** Stream interval bounds, ms: the floor keeps a client from turning the agent into a busy loop. */
export const STREAM_INTERVAL = { default: 1000, min: 100 } as const;

/** NodeService handlers. */
export function nodeService(deps: NodeServiceDeps): ServiceImpl<typeof NodeService> {
  const startedAt = deps.startedAt ?? Date.now();
  const maxStreams = deps.maxStreams ?? 256;
  let streams = 0;
  return {
    getResources() {
      return { nodeId: deps.view.local().id, resources: deps.resources() };
    },
    healthCheck() {
      const local = deps.view.local();
      const ready = deps.readiness?.() ??
        (local.state === NodeState.ALIVE
          ? { serving: true }
          : { serving: false, detail: `node is ${NodeState[local.state].toLowerCase()}` });
      return {
        status: ready.serving
          ? HealthCheckResponse_ServingStatus.SERVING
          : HealthCheckResponse_ServingStatus.NOT_SERVING,
        nodeId: local.id,
        version: local.version,
        uptimeSeconds: (Date.now() - startedAt) / 1000,
        state: local.state,
        detail: ready.serving ? "" : ready.detail ?? "not serving",
      };
    },
    getPeers(req) {
      const self = deps.view.local().id;
      const peers = deps.view.members()
        .filter((n) => n.id !== self && (req.includeDeparted || LIVE.has(n.state)))
        .sort(byId);
      return { peers };
    },
    getMetrics() {
      return { metrics: deps.metrics() };
    },
    async *streamMetrics(req, ctx: HandlerContext) {
      // Each open stream holds a timer and a sample per interval: bounded, so a client opening
      // streams without end cannot make the agent sample for all of them.
      if (streams >= maxStreams) {
        throw new RpcFailure(
          "resource_exhausted",
          `${streams} metrics streams are open on this node (at most ${maxStreams}); close one`,
        );
      }
      streams++;
      try {
        const interval = Math.max(STREAM_INTERVAL.min, req.intervalMs || STREAM_INTERVAL.default);
        for (let i = 0; req.maxSamples === 0 || i < req.maxSamples; i++) {
          if (i > 0) await sleep(interval, ctx.signal);
          if (ctx.signal.aborted) return;
          yield { metrics: deps.metrics() };
        }
      } finally {
        streams--;
      }
    },
  };
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}
