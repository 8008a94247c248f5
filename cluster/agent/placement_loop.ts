/**
 * The placement loop: every agent plans the same placement from the same gossip view
 * (cluster/placement is a pure function of the members' inputs), loads its own range, and
 * derives the cluster-wide placement epoch from the plan, so heads and stages can tell when
 * they planned with different views.
 *
 * With `--replicas` above 1 (or auto) the plan is several disjoint pipelines: each member's
 * announced range and replica are inputs too, so pipelines that still stand are kept as they are
 * and a join or a loss re-groups only the nodes it touches.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import {
  type Placement as WirePlacement,
  PlacementSchema,
  ReplicaSchema,
  type StageAssignment as WireStage,
  StageAssignmentSchema,
} from "../../proto/mod.ts";
import type { Member } from "../gossip/mod.ts";
import {
  agreedReplicaCount,
  type Placement,
  PlacementError,
  planReplicas,
  type ReplicaCount,
  replicaCountFromWire,
  replicaEpoch,
  type ReplicaNode,
  type ReplicaPlan,
} from "../placement/mod.ts";
import { describeGap, type StageCandidate, tileChain } from "../pipeline/mod.ts";
import { RpcFailure } from "../rpc/mod.ts";
import { dataEndpoint, rpcEndpoint } from "./peers.ts";
import { HostedVersions } from "./hosted_versions.ts";
import type { AgentState } from "./state.ts";
import type { Observer } from "./observe.ts";
import type { StageRoom } from "./stage.ts";
import { agreedKvReserve } from "./served_model.ts";

/**
 * What placement needs of each member: its id, budget, calibrated speed and, for `model`, the
 * range and replica it hosts now (replica planning keeps standing pipelines).
 */
export function placementInputs(members: readonly Member[], model?: string): ReplicaNode[] {
  return members.filter((m) => m.meta).map((m) => {
    const meta = m.meta!;
    const h = meta.hosted;
    return {
      id: m.id,
      memoryBudget: meta.resources.memoryBytes,
      speed: meta.resources.speed || 1,
      ...(model && h && h.model === model && meta.replica
        ? { hosting: { from: h.from, to: h.to, head: meta.replica } }
        : {}),
    };
  });
}

/**
 * The members whose stage failed to load, and why ("the stage failed to load on s: layers
 * [0,5): …"), or "" when none did.
 */
export function stageFailures(members: readonly Member[]): string {
  const failed = members.filter((m) =>
    m.meta?.stageError && (m.status === "alive" || m.status === "suspect")
  );
  if (failed.length === 0) return "";
  const each = failed.slice(0, 4).map((m) =>
    `the stage failed to load on ${m.id}: ${m.meta!.stageError}`
  );
  if (failed.length > 4) each.push(`and on ${failed.length - 4} more`);
  return `${each.join("; ")} (it left the placement until the agent restarts or the model is ` +
    `deployed again)`;
}

/**
 * The members placement plans over for `model`: those offering it, alive, and not refused by
 * mTLS. A suspect is left out, so a killed stage's layers are re-placed within a probe or two
 * (a standby fetches them while gossip is still confirming the death). Every agent re-plans on a
 * suspicion too (cluster/agent.ts), 250 ms later: all of them drop the suspect at about the same
 * time, and a suspicion refuted within that moment moves nothing.
 */
export function modelMembers(
  members: readonly Member[],
  model: string,
  untrusted: { has(id: string): boolean },
): Member[] {
  return members.filter((m) =>
    m.status === "alive" && m.meta?.model === model && !untrusted.has(m.id)
  );
}

/** The replica count `members` agree on: the fewest any asks for (cluster/placement). */
export function agreedReplicas(members: readonly Member[]): ReplicaCount {
  return agreedReplicaCount(
    members.filter((m) => m.meta).map((m) => replicaCountFromWire(m.meta!.replicas)),
  );
}

/** How `--replicas` reads to a user. */
export function replicaSetting(c: ReplicaCount): string {
  return String(c);
}

/** Re-plans on membership changes and drives the stage room. */
export class PlacementLoop {
  /** The replica plan in force (undefined: none yet, or none fits). */
  replicas?: ReplicaPlan;
  /** The pipeline this agent serves in (else the first): what a single-chain reader wants. */
  plan?: Placement;
  /** The replica count the plan was made for. */
  setting: ReplicaCount = 1;
  /** Why the last planning attempt found no placement (shown to clients). */
  error?: string;
  /** The cluster-wide epoch of `replicas` (0n: no plan). */
  epoch = 0n;
  private timer?: ReturnType<typeof setTimeout>;
  /** Per member: which announcement its stage is (the version heads exclude a failure by). */
  private readonly hosted = new HostedVersions();

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
    this.replicas = undefined;
    this.plan = undefined;
    this.error = undefined;
    this.epoch = 0n;
  }

  /** Members (this one included) that offer our model. */
  modelPeers(): Member[] {
    const id = this.s.model?.id.toString();
    return id ? modelMembers(this.s.gossip.members(), id, this.s.untrusted) : [];
  }

  /** Plan now from the current view; load this agent's range when it changed. */
  replan(): void {
    const s = this.s;
    if (s.stopped || !s.model) return;
    if (s.idConflict !== undefined) {
      // A live member elsewhere holds our id: we are no member, so we plan and host nothing
      // (alone, we planned ourselves the whole model and served it as that member).
      const before = this.error;
      this.reset();
      this.error = s.idConflict;
      this.stage.want(undefined);
      if (before !== s.idConflict) this.observe.publishPlacement(`no placement: ${s.idConflict}`);
      return;
    }
    const peers = this.modelPeers();
    // A deploy in progress: wait until every planned node offers the model (cluster/transfer).
    if (!s.transfer.planReady(s.model.id.toString(), peers.map((m) => m.id))) return;
    let plan: ReplicaPlan;
    const setting = agreedReplicas(peers);
    try {
      plan = this.planOver(peers, setting);
    } catch (e) {
      if (e instanceof PlacementError) {
        // A member whose stage failed to load left the plan: that, not memory or agents, is
        // what an operator must fix (the 503 and readiness said "no live node offers memory").
        const failed = stageFailures(s.gossip.members());
        const why = (failed ? `${e.message}; ${failed}` : e.message).slice(0, 1024);
        s.log("warn", "no placement", { error: why, members: peers.length });
        const before = this.error;
        this.reset();
        if (before !== why) this.observe.publishPlacement(`no placement: ${why}`);
        this.error = why;
        return;
      }
      throw e;
    }
    const epoch = replicaEpoch(plan, s.model.id.toString());
    const changed = epoch !== this.epoch;
    const mineAt = plan.replicas.findIndex((r) => r.stages.some((st) => st.nodeId === s.nodeId));
    this.replicas = plan;
    this.plan = plan.replicas[Math.max(0, mineAt)];
    this.setting = setting;
    this.epoch = epoch;
    this.error = undefined;
    if (changed) {
      s.log("info", "placement", {
        epoch: String(epoch),
        replicas: plan.replicas.length,
        setting: replicaSetting(setting),
        stages: plan.replicas.map((r) =>
          r.stages.map((st) => `${st.nodeId}:[${st.from},${st.to})`).join(" ")
        ).join(" | "),
        standby: plan.standby.join(","),
      });
      this.observe.publishPlacement(this.observe.planReason, plan);
    }
    const mine = mineAt < 0
      ? undefined
      : plan.replicas[mineAt].stages.find((st) => st.nodeId === s.nodeId);
    this.stage.want(
      mine ? { from: mine.from, to: mine.to } : undefined,
      mineAt < 0 ? undefined : plan.replicas[mineAt].stages[0].nodeId,
    );
  }

  private planOver(peers: readonly Member[], setting: ReplicaCount): ReplicaPlan {
    const s = this.s;
    const own = { context: s.config.contextSize, sessions: s.config.maxSessions };
    return planReplicas(
      s.model!.footprintFor(agreedKvReserve(peers, own)),
      placementInputs(peers, s.model!.id.toString()),
      setting,
    );
  }

  /** A plan over the members offering our model, minus `without`; throws when none fits. */
  planWithout(without: string | undefined): ReplicaPlan {
    const peers = this.modelPeers().filter((m) => m.id !== without);
    try {
      return this.planOver(peers, agreedReplicas(peers));
    } catch (e) {
      if (e instanceof PlacementError) throw new RpcFailure("failed_precondition", e.message);
      throw e;
    }
  }

  /**
   * The wire form of `plan` (default: the plan in force), with each stage's RPC endpoint and
   * each replica's load as its first stage last published it.
   */
  message(plan = this.replicas): WirePlacement | undefined {
    const s = this.s;
    if (!plan || !s.model || plan.replicas.length === 0) return undefined;
    const wire = (st: Placement["stages"][number]): WireStage => {
      const m = s.gossip.member(st.nodeId);
      return create(StageAssignmentSchema, {
        nodeId: st.nodeId,
        fromLayer: st.from,
        toLayer: st.to,
        rpcEndpoint: m?.meta ? rpcEndpoint(m) : "",
        dataEndpoint: m?.meta ? dataEndpoint(m) ?? "" : "",
      });
    };
    return create(PlacementSchema, {
      model: s.model.id.toString(),
      totalLayers: plan.replicas[0].nLayers,
      epoch: replicaEpoch(plan, s.model.id.toString()),
      stages: plan.replicas[0].stages.map(wire),
      replicas: plan.replicas.map((r) => {
        const id = r.stages[0].nodeId;
        const load = s.gossip.member(id)?.meta?.load;
        return create(ReplicaSchema, {
          id,
          stages: r.stages.map(wire),
          sessions: load?.sessions ?? 0,
          queued: load?.queued ?? 0,
          freeSlots: load?.free ?? 0,
          tokensPerSecond: load?.tokensPerSecond ?? 0,
        });
      }),
      standby: [...plan.standby],
      replicasSetting: replicaSetting(
        plan === this.replicas ? this.setting : agreedReplicas(
          this.modelPeers(),
        ),
      ),
    });
  }

  /** Members announcing a loaded stage (alive or suspect), indexed into `byId` when given. */
  stageCandidates(byId?: Map<string, Member>): StageCandidate[] {
    byId?.clear();
    const out: StageCandidate[] = [];
    for (const m of this.s.gossip.members()) {
      const h = m.meta?.hosted;
      const version = this.hosted.of(m);
      if (!h || (m.status !== "alive" && m.status !== "suspect")) continue;
      if (this.s.untrusted.has(m.id)) continue;
      byId?.set(m.id, m);
      out.push({
        id: m.id,
        status: m.status,
        model: h.model,
        from: h.from,
        to: h.to,
        version,
        replica: m.meta!.replica || undefined,
        load: m.meta!.load,
        loadVersion: m.incarnation,
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
    return Array.isArray(t) ? null : describeGap(t, "is not loaded yet", "are not loaded yet");
  }
}
