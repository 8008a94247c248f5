/**
 * Replicas: when the live nodes' budgets hold a model k times, k disjoint pipelines instead of
 * one, so a 20-node cluster serving a 4-node model runs 5 pipelines rather than leaving 16
 * nodes idle.
 *
 * Like planPlacement, the plan is a pure function of what gossip says (each node's budget,
 * speed and the layer range it hosts now), so every agent computes the same replicas without a
 * coordinator. Movement is kept small by that last input: pipelines whose nodes still host a
 * whole, valid chain of the model are kept as they are, a pipeline that lost a stage keeps its
 * other stages and takes a standby for the missing layers (./hosting.ts), and only the remaining
 * nodes are grouped anew — a node joining or leaving disturbs at most the replica it touches.
 */
import {
  followsHosting,
  hostedChains,
  hostedGroups,
  keptPlacement,
  repairGroup,
  type ReplicaNode,
} from "./hosting.ts";
import {
  byBudget,
  type ModelFootprint,
  type Placement,
  PlacementError,
  planEpoch,
  planPlacement,
} from "./plan.ts";

export type { ReplicaNode } from "./hosting.ts";

/** `--replicas`: a fixed count, or as many as the budgets hold. */
export type ReplicaCount = number | "auto";

/** The replicas (each a whole pipeline, disjoint nodes) and the nodes left as standbys. */
export interface ReplicaPlan {
  readonly replicas: readonly Placement[];
  /** Live nodes in no replica: they take over a failed stage's layers. */
  readonly standby: readonly string[];
}

/** Parse a `--replicas` value: "auto" or a positive integer. */
export function parseReplicaCount(v: string): ReplicaCount {
  if (v === "auto") return "auto";
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) {
    throw new Error(`--replicas must be "auto" or a positive integer, got "${v}"`);
  }
  return n;
}

const byId = (a: { id: string }, b: { id: string }) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/**
 * Plan `count` replicas of model `m` over `nodes` (auto: as many as fit, each pipeline as
 * short as the budgets allow). One replica is planPlacement over every node, as before replicas
 * existed. Throws PlacementError when not even one pipeline fits.
 */
export function planReplicas(
  m: ModelFootprint,
  nodes: readonly ReplicaNode[],
  count: ReplicaCount = 1,
): ReplicaPlan {
  const live = nodes.filter((n) => n.memoryBudget > 0 && n.speed > 0).sort(byId);
  if (count === 1) {
    const fresh = planPlacement(m, live);
    return withStandby([keptPlacement(m, live, fresh) ?? fresh], live);
  }
  const max = count === "auto" ? Infinity : count;
  const bigFirst = [...live].sort(byBudget);
  planPlacement(m, bigFirst); // throws the PlacementError that says what is missing
  // The plan from scratch is followed while it leaves every announced stage where it is: the
  // usual case while a plan is being loaded (the ranges nodes announce came from it), so the
  // plan does not change as its nodes announce their ranges one by one.
  const fresh = grouped(m, bigFirst, [], max);
  if (followsHosting(m, live, fresh)) return withStandby(fresh, live);
  // Otherwise keep what stands, whatever its length: chains of hosted ranges covering every
  // layer as they are, and pipelines that lost a stage repaired by nodes hosting nothing (the
  // other stages keep their layers, so a standby replacing a lost node is the only one that
  // loads); the other nodes are grouped anew. Moving kept nodes is worth it only for a replica
  // more: then the plan from scratch is taken.
  const kept: Placement[] = [];
  const taken = new Set<string>();
  const groups = hostedGroups(m, live);
  for (const chain of hostedChains(m, groups)) {
    if (kept.length >= max) break;
    kept.push(chain);
    for (const st of chain.stages) taken.add(st.nodeId);
  }
  const inGroup = new Set(groups.flatMap((g) => g.members.map((n) => n.id)));
  for (const g of groups) {
    if (kept.length >= max) break;
    if (g.members.some((n) => taken.has(n.id))) continue;
    const spare = live.filter((n) => !inGroup.has(n.id) && !taken.has(n.id));
    const fixed = repairGroup(m, g, spare);
    if (!fixed) continue;
    kept.push(fixed);
    for (const st of fixed.stages) taken.add(st.nodeId);
  }
  const stable = grouped(m, bigFirst.filter((n) => !taken.has(n.id)), kept, max);
  return withStandby(fresh.length > stable.length ? fresh : stable, live);
}

/**
 * `replicas` and more grouped from `pool` (in its order, each group as small as holds the model)
 * until `max`, sorted by head id: replica i is the same pipeline on every agent.
 */
function grouped(
  m: ModelFootprint,
  pool: readonly ReplicaNode[],
  replicas: readonly Placement[],
  max: number,
): Placement[] {
  const out = [...replicas];
  let group: ReplicaNode[] = [];
  for (const n of pool) {
    if (out.length >= max) break;
    group.push(n);
    const plan = tryPlan(m, group);
    if (!plan) continue;
    out.push(plan);
    group = [];
  }
  return out.sort((a, b) => byId({ id: a.stages[0].nodeId }, { id: b.stages[0].nodeId }));
}

/** The plan of `replicas`, the live nodes in none of them standing by. */
function withStandby(replicas: Placement[], live: readonly ReplicaNode[]): ReplicaPlan {
  const used = new Set(replicas.flatMap((r) => r.stages.map((st) => st.nodeId)));
  return { replicas, standby: live.filter((n) => !used.has(n.id)).map((n) => n.id) };
}

function tryPlan(m: ModelFootprint, group: readonly ReplicaNode[]): Placement | undefined {
  try {
    return planPlacement(m, group);
  } catch (e) {
    if (e instanceof PlacementError) return undefined;
    throw e;
  }
}

/** How a replica count travels in gossip metadata: 0 = auto, else the count. */
export function replicaCountToWire(c: ReplicaCount): number {
  return c === "auto" ? 0 : c;
}

/** The count a metadata field says (0 = auto; absent = 1, an agent that predates replicas). */
export function replicaCountFromWire(n: number | undefined): ReplicaCount {
  return n === undefined ? 1 : n === 0 ? "auto" : n;
}

/**
 * The replica count a cluster runs: the fewest any member asks for ("auto" is unbounded). Each
 * agent's `--replicas` is only a request; without one agreed rule, agents configured
 * differently would plan different replicas and never agree on an epoch. The fewest is the safe
 * choice: a member that asks for one pipeline (or predates replicas) is never outvoted into
 * holding whole copies of the model.
 */
export function agreedReplicaCount(asked: readonly ReplicaCount[]): ReplicaCount {
  let out: ReplicaCount = "auto";
  for (const c of asked) if (c !== "auto" && (out === "auto" || c < out)) out = c;
  return asked.length === 0 ? 1 : out;
}

/**
 * The placement epoch of a replica plan: with one replica exactly planEpoch of it (as before
 * replicas existed), with several a hash over every replica's stages in order, so a change to
 * any replica is a new epoch every agent derives alike.
 */
export function replicaEpoch(plan: ReplicaPlan, model: string): bigint {
  if (plan.replicas.length === 1) return planEpoch(plan.replicas[0], model);
  const all: Placement = {
    nLayers: plan.replicas[0]?.nLayers ?? 0,
    stages: plan.replicas.flatMap((r, i) =>
      r.stages.map((s) => ({ ...s, nodeId: `${i}/${s.nodeId}` }))
    ),
  };
  return planEpoch(all, `${model}#${plan.replicas.length}`);
}
