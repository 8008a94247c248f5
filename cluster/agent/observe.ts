/**
 * What the agent tells watchers: cluster events (membership, placement, its own state), the
 * NodeInfo fields gossip does not carry, and what a Prometheus scrape reads.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import { type Placement as WirePlacement, PlacementEventSchema } from "../../proto/mod.ts";
import type { Member } from "../gossip/mod.ts";
import { memberToNodeInfo, type NodeInfoExtras } from "../discovery/gossip_view.ts";
import type { MetricsSource } from "../telemetry/mod.ts";
import type { ReplicaPlan } from "../placement/mod.ts";
import type { AgentState } from "./state.ts";

/** Publishes events and answers scrapes from the agent's state. */
export class Observer {
  /** Why the next placement change happens: the last membership change seen. */
  planReason = "start-up";

  constructor(
    private readonly s: AgentState,
    /** The wire placement of `plan` (default: the current one). */
    private readonly placementMessage: (plan?: ReplicaPlan) => WirePlacement | undefined,
  ) {}

  /** Publish a gossip membership change; remember it as the reason of the next re-plan. */
  memberEvent(type: string, member: Member): void {
    if (type !== "update") this.s.stateChangedAt.set(member.id, Date.now());
    this.s.memberEvents.publish(memberToNodeInfo(member, this.nodeInfoExtras()));
    if (type !== "update") this.planReason = `node ${member.id} ${type}`;
  }

  /** Publish the placement (or its absence) with why it changed. */
  publishPlacement(reason: string, plan?: ReplicaPlan): void {
    this.s.events.publish({
      case: "placement",
      value: create(PlacementEventSchema, { placement: this.placementMessage(plan), reason }),
    });
  }

  /** Publish this node's own state (gossip reports no events about ourselves). */
  publishSelf(reason: string): void {
    this.s.memberEvents.publish(memberToNodeInfo(this.s.gossip.localNode, this.nodeInfoExtras()));
    this.publishPlacement(reason);
  }

  /** NodeInfo fields gossip does not carry: layer counts of the served model, state changes. */
  nodeInfoExtras(): NodeInfoExtras {
    const s = this.s;
    return {
      totalLayers: (model) => model === s.model?.id.toString() ? s.model.nLayers : 0,
      maxLayers: (bytes) => {
        const f = s.model?.footprint;
        if (!f || f.nLayers === 0) return 0;
        const perLayer = f.layerBytes.reduce((a, b) => a + b, 0) / f.nLayers + f.kvBytesPerLayer;
        return Math.min(f.nLayers, Math.floor(bytes / perLayer));
      },
      stateChangedAt: (id) => s.stateChangedAt.get(id) ?? 0,
    };
  }

  /** What a metrics scrape reads from this agent (cluster/telemetry). */
  metricsSource(): MetricsSource {
    const s = this.s;
    return {
      layersHosted: () => s.hostedLayers,
      backendInfo: () => ({
        backend: s.backend.name,
        adapter: s.backend.device,
        reason: s.backendReason,
      }),
      requestsActive: () => s.counters.activeRequests,
      // Work waiting here: requests queued for a generation slot, plus stage frames waiting for
      // (or in) the current batched pass. This is what the KEDA queue-depth scaler reads.
      queueDepth: () => (s.admission?.stats.queued ?? 0) + (s.stage?.pending ?? 0),
      kvCacheSlots: () => {
        const used = s.stage?.openSessions ?? 0;
        return { used, free: s.stage?.freeSlots ?? 0 };
      },
      modelMemory: () => s.stage?.memoryBytes ?? { weights: 0, kvCache: 0 },
      replicaSessions: () => {
        const out: Record<string, number> = {};
        for (const r of this.placementMessage()?.replicas ?? []) out[r.id] = r.sessions;
        return out;
      },
      gossipMembers: () => {
        const out: Record<string, number> = {};
        for (const m of s.gossip.allMembers()) out[m.status] = (out[m.status] ?? 0) + 1;
        return out;
      },
      gossipProbeRttMs: () => s.gossip.stats.probeRttMs,
      gossipDropped: () => s.gossip.stats.droppedPackets,
      prefixCache: () => s.stage?.stage.prefixCache?.stats(),
      tokensRepliedDirect: () => s.replies.sent,
      sessionRefusals: () => s.stage?.refusals,
    };
  }
}
