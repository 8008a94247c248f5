/**
 * The RPC port's services, wired to the agent's rooms: discovery, node, cluster events and
 * commands, model transfer, reflection, gRPC health, and inference.
 *
 * @module
 */
import type { ConnectRouter } from "@connectrpc/connect";
import {
  ClusterService,
  DiscoveryService,
  InferenceService,
  NodeService,
  TransferService,
} from "../../proto/mod.ts";
import {
  discoveryService,
  measureResources,
  MetricsSampler,
  nodeService,
  type RequestTotals,
} from "../discovery/mod.ts";
import { GossipMembershipView } from "../discovery/gossip_view.ts";
import { clusterService } from "../events/mod.ts";
import { transferService } from "../transfer/mod.ts";
import { Health } from "../rpc/health.ts";
import { registerReflection } from "../rpc/reflection.ts";
import { createClient } from "@connectrpc/connect";
import type { NodeMetrics } from "../../proto/mod.ts";
import type { AgentMetrics } from "../telemetry/mod.ts";
import type { AgentState } from "./state.ts";
import type { PlacementLoop } from "./placement_loop.ts";
import type { Peers } from "./peers.ts";
import type { Observer } from "./observe.ts";
import type { HeadService } from "./head_service.ts";
import { clusterCommands } from "./commands.ts";
import { grpcHealth, readiness } from "./health.ts";
import { inferenceService } from "./inference_rpc.ts";
import type { RequestForwarder } from "./forward_rpc.ts";

/** Services of the RPC port that grpc.health.v1 answers for by name. */
const RPC_SERVICES = [DiscoveryService, NodeService, ClusterService, TransferService];

/** The rooms the routes read. */
export interface RouteRooms {
  s: AgentState;
  loop: PlacementLoop;
  peers: Peers;
  observe: Observer;
  head: HeadService;
  metrics: AgentMetrics;
  /** Passes Generate on while this agent serves no model. */
  forward?: RequestForwarder;
  /** Stop this agent (LeaveCluster on itself). */
  stop: () => Promise<void>;
}

/** Register every service of the agent's RPC port on `r`. */
export function agentRoutes(r: ConnectRouter, rooms: RouteRooms): void {
  const { s, loop, peers, observe, head, metrics } = rooms;
  const view = new GossipMembershipView(s.gossip, {
    clusterName: s.config.clusterName,
    placement: () => loop.message(),
    placementError: () => loop.error,
    onLocalLeave: rooms.stop,
    extras: observe.nodeInfoExtras(),
    departedRetentionMs: s.config.departedRetention,
  });
  const sampler = new MetricsSampler(s.nodeId, () => ({
    activeSessions: s.stage?.openSessions ?? 0,
    activeRequests: s.counters.activeRequests,
    tokensGeneratedTotal: s.counters.tokensGeneratedTotal,
    framesProcessedTotal: s.counters.framesProcessedTotal,
  }));
  r.service(
    DiscoveryService,
    discoveryService(view, {
      requestTotals: () => clusterTotals(s, peers, () => sampler.sample()),
    }),
  );
  r.service(
    NodeService,
    nodeService({
      view,
      resources: () =>
        measureResources({
          memoryBudgetBytes: s.config.memoryBudget,
          usedLayers: () => s.hostedLayers,
          threads: s.config.threads,
        }),
      metrics: () => sampler.sample(),
      readiness: () => readiness(s, loop),
    }),
  );
  r.service(
    ClusterService,
    clusterService({
      hub: s.events,
      localId: s.nodeId,
      snapshot: () => ({ members: view.members(), placement: loop.message() }),
      metrics: () => sampler.sample(),
      peers: () =>
        s.gossip.members()
          .filter((m) => m.id !== s.nodeId && m.status === "alive" && m.meta)
          .map((m) => ({ id: m.id, transport: () => peers.transportTo(m) })),
      commands: clusterCommands(s, loop, peers, observe),
    }),
  );
  r.service(TransferService, transferService(s.transfer));
  // Reflection (v1 and v1alpha), so grpcurl, grpc_cli and the like need no .proto files.
  registerReflection(r, [...RPC_SERVICES, InferenceService, Health]);
  r.service(Health, grpcHealth(s, loop, RPC_SERVICES.map((d) => d.typeName)));
  r.service(InferenceService, inferenceService(s, head, loop, metrics, rooms.forward));
}

/**
 * Sums of every alive member's own GetMetrics sample (this node's without a call): requests,
 * tokens and memory are per-process counters that gossip does not carry. A member that does
 * not answer within 500 ms is left out rather than delaying the answer.
 */
async function clusterTotals(
  s: AgentState,
  peers: Peers,
  local: () => NodeMetrics,
): Promise<RequestTotals> {
  const alive = s.gossip.members().filter((m) => m.status === "alive" && m.meta);
  const samples = await Promise.all(alive.map(async (m) => {
    if (m.id === s.nodeId) return local();
    try {
      const client = createClient(NodeService, await peers.transportTo(m));
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
  for (const m of samples) {
    if (!m) continue;
    t.activeRequests += m.activeRequests;
    t.tokensGeneratedTotal += Number(m.tokensGeneratedTotal);
    t.memoryTotalBytes += Number(m.memoryTotalBytes);
    t.memoryAvailableBytes += Number(m.memoryAvailableBytes);
  }
  return t;
}
