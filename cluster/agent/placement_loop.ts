/**
 * The placement loop: every agent plans the same placement from the same gossip view
 * (cluster/placement is a pure function of the members' inputs), loads its own range, and
 * derives the cluster-wide placement epoch from the plan, so heads and stages can tell when
 * they planned with different views.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import {
  type Placement as WirePlacement,
  PlacementSchema,
  StageAssignmentSchema,
} from "../../proto/mod.ts";
import type { Member } from "../gossip/mod.ts";
import {
  type Placement,
  PlacementError,
  type PlacementNode,
  planEpoch,
  planPlacement,
} from "../placement/mod.ts";
import { type StageCandidate, tileChain } from "../pipeline/mod.ts";
import { RpcFailure } from "../rpc/mod.ts";
import { rpcEndpoint } from "./peers.ts";
import type { AgentState } from "./state.ts";
import type { Observer } from "./observe.ts";
import type { StageRoom } from "./stage.ts";

/** What placement needs of each member: its id, budget and calibrated speed. */
export function placementInputs(members: readonly Member[]): PlacementNode[] {
  return members.filter((m) => m.meta).map((m) => ({
    id: m.id,
    memoryBudget: m.meta!.resources.memoryBytes,
    speed: m.meta!.resources.speed || 1,
  }));
}

/** Re-plans on membership changes and drives the stage room. */
export class PlacementLoop {
  /** The plan in force (undefined: none yet, or none fits). */
  plan?: Placement;
  /** Why the last planning attempt found no placement (shown to clients). */
  error?: string;
  /** The cluster-wide epoch of `plan` (0n: no plan). */
  epoch = 0n;
  private timer?: ReturnType<typeof setTimeout>;

  constructor(
    private readonly s: AgentState,
    private readonly stage: StageRoom,
    private readonly observe: Observer,
  ) {}

  /** Re-plan shortly after membership settles (several events usually arrive together). */
  schedule(): void {
    if (this.s.stopped || !this.s.model) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.replan(), 250);
  }

  /** Stop planning (shutdown). */
  stop(): void {
    clearTimeout(this.timer);
  }

  /** Forget the plan (the model is no longer served). */
  reset(): void {
    this.plan = undefined;
    this.error = undefined;
    this.epoch = 0n;
  }

  /** Members (this one included) that offer our model. */
  modelPeers(): Member[] {
    const id = this.s.model?.id.toString();
    return this.s.gossip.members().filter((m) =>
      m.status === "alive" && m.meta?.model === id && !this.s.untrusted.has(m.id)
    );
  }

  /** Plan now from the current view; load this agent's range when it changed. */
  replan(): void {
    const s = this.s;
    if (s.stopped || !s.model) return;
    const peers = this.modelPeers();
    // A deploy in progress: wait until every planned node offers the model (cluster/transfer).
    if (!s.transfer.planReady(s.model.id.toString(), peers.map((m) => m.id))) return;
    let plan: Placement;
    try {
      plan = planPlacement(s.model.footprint, placementInputs(peers));
    } catch (e) {
      if (e instanceof PlacementError) {
        s.log("warn", "no placement", { error: e.message, members: peers.length });
        this.plan = undefined;
        this.epoch = 0n;
        if (this.error !== e.message) this.observe.publishPlacement(`no placement: ${e.message}`);
        this.error = e.message;
        return;
      }
      throw e;
    }
    const epoch = planEpoch(plan, s.model.id.toString());
    const changed = epoch !== this.epoch;
    this.plan = plan;
    this.epoch = epoch;
    this.error = undefined;
    if (changed) {
      s.log("info", "placement", {
        epoch: String(epoch),
        stages: plan.stages.map((st) => `${st.nodeId}:[${st.from},${st.to})`).join(" "),
      });
      this.observe.publishPlacement(this.observe.planReason, plan);
    }
    const mine = plan.stages.find((st) => st.nodeId === s.nodeId);
    this.stage.want(mine ? { from: mine.from, to: mine.to } : undefined);
  }

  /** A plan over the members offering our model, minus `without`; throws when none fits. */
  planWithout(without: string | undefined): Placement {
    const peers = this.modelPeers().filter((m) => m.id !== without);
    try {
      return planPlacement(this.s.model!.footprint, placementInputs(peers));
    } catch (e) {
      if (e instanceof PlacementError) throw new RpcFailure("failed_precondition", e.message);
      throw e;
    }
  }

  /** The wire form of `plan` (default: the plan in force), with each stage's RPC endpoint. */
  message(plan = this.plan): WirePlacement | undefined {
    const s = this.s;
    if (!plan || !s.model) return undefined;
    return create(PlacementSchema, {
      model: s.model.id.toString(),
      totalLayers: plan.nLayers,
      epoch: planEpoch(plan, s.model.id.toString()),
      stages: plan.stages.map((st) => {
        const m = s.gossip.member(st.nodeId);
        return create(StageAssignmentSchema, {
          nodeId: st.nodeId,
          fromLayer: st.from,
          toLayer: st.to,
          rpcEndpoint: m?.meta ? rpcEndpoint(m) : "",
        });
      }),
    });
  }

  /** Members announcing a loaded stage (alive or suspect), indexed into `byId` when given. */
  stageCandidates(byId?: Map<string, Member>): StageCandidate[] {
    byId?.clear();
    const out: StageCandidate[] = [];
    for (const m of this.s.gossip.members()) {
      const h = m.meta?.hosted;
      if (!h || (m.status !== "alive" && m.status !== "suspect")) continue;
      if (this.s.untrusted.has(m.id)) continue;
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
  missingLayers(): string | null {
    const model = this.s.model;
    if (!model) return null;
    const n = model.nLayers;
    const t = tileChain(this.stageCandidates(), model.id.toString(), n, new Set());
    return Array.isArray(t) ? null : `layers ${t.missingFrom}..${n - 1} are not loaded yet`;
  }
}
