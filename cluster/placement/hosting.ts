/**
 * What nodes host now, read back into plans: the pipelines that still stand, and the repair of
 * one that lost a stage. Placement stays a pure function of gossip state; these functions only
 * let that state include each node's current range, so a re-plan moves as little as it can.
 *
 * @module
 */
import {
  type ModelFootprint,
  type Placement,
  type PlacementNode,
  type StageAssignment,
  stageBytes,
} from "./plan.ts";

/** A node as replica planning sees it: its placement inputs and what it hosts now, if anything. */
export interface ReplicaNode extends PlacementNode {
  /**
   * What this node serves now for the model being planned (gossip): layers [from, to) in the
   * pipeline whose first stage is node `head`.
   */
  readonly hosting?: { readonly from: number; readonly to: number; readonly head: string };
}

/** The stages one pipeline's nodes host now, in layer order (gaps where a node was lost). */
export interface HostedGroup {
  /** The node the members name as their pipeline's first stage (it may be gone). */
  readonly head: string;
  readonly members: readonly ReplicaNode[];
}

const byId = (a: { id: string }, b: { id: string }) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/** Whether `n` hosts a range of `m` that exists and that its budget still holds. */
function validHosting(m: ModelFootprint, n: ReplicaNode): boolean {
  const h = n.hosting;
  return !!h && h.from >= 0 && h.to <= m.nLayers && h.to > h.from &&
    stageBytes(m, h.from, h.to) <= n.memoryBudget;
}

/**
 * Live nodes grouped by the pipeline they host a stage of, in head id order; a group whose
 * ranges overlap (stages of two plans at once) is left out: it is no pipeline to keep.
 */
export function hostedGroups(m: ModelFootprint, live: readonly ReplicaNode[]): HostedGroup[] {
  const byHead = new Map<string, ReplicaNode[]>();
  for (const n of live) {
    if (!validHosting(m, n)) continue;
    const list = byHead.get(n.hosting!.head) ?? [];
    list.push(n);
    byHead.set(n.hosting!.head, list);
  }
  const groups: HostedGroup[] = [];
  for (const [head, members] of [...byHead].sort((a, b) => byId({ id: a[0] }, { id: b[0] }))) {
    members.sort((a, b) => a.hosting!.from - b.hosting!.from || byId(a, b));
    const overlaps = members.some((n, i) => i > 0 && n.hosting!.from < members[i - 1].hosting!.to);
    if (!overlaps) groups.push({ head, members });
  }
  return groups;
}

/** The stage node `n` hosts now. */
function hostedStage(m: ModelFootprint, n: ReplicaNode): StageAssignment {
  const { from, to } = n.hosting!;
  return { nodeId: n.id, from, to, bytes: stageBytes(m, from, to) };
}

/**
 * The pipelines nodes serve now (`groups`, from hostedGroups), each kept whole when its stages
 * (the nodes naming the same head, the head among them as the first stage) still chain from
 * layer 0 to the last within their budgets. In head id order.
 */
export function hostedChains(m: ModelFootprint, groups: readonly HostedGroup[]): Placement[] {
  const chains: Placement[] = [];
  for (const { head, members } of groups) {
    if (members[0].id !== head) continue; // the head itself is gone
    let at = 0;
    for (const n of members) {
      if (n.hosting!.from !== at) break;
      at = n.hosting!.to;
    }
    if (at === m.nLayers) {
      chains.push({ nLayers: m.nLayers, stages: members.map((n) => hostedStage(m, n)) });
    }
  }
  return chains;
}

/**
 * `group` with every range no member hosts (a lost stage's layers) given to `spare` nodes, in
 * id order, each taking as many of a gap's layers as its budget holds; the members keep their
 * ranges. Undefined when the spares cannot cover the gaps.
 */
export function repairGroup(
  m: ModelFootprint,
  group: HostedGroup,
  spare: readonly ReplicaNode[],
): Placement | undefined {
  const free = [...spare].sort(byId);
  const stages: StageAssignment[] = [];
  let at = 0;
  const cover = (to: number): boolean => {
    while (at < to) {
      const n = free.shift();
      if (!n) return false;
      let end = at;
      while (end < to && stageBytes(m, at, end + 1) <= n.memoryBudget) end++;
      if (end === at) continue; // this spare cannot take the next layer; the next one tries
      stages.push({ nodeId: n.id, from: at, to: end, bytes: stageBytes(m, at, end) });
      at = end;
    }
    return true;
  };
  for (const n of group.members) {
    if (!cover(n.hosting!.from)) return undefined;
    stages.push(hostedStage(m, n));
    at = n.hosting!.to;
  }
  if (!cover(m.nLayers)) return undefined;
  return { nLayers: m.nLayers, stages };
}

/**
 * One pipeline with minimal movement: when `fresh` would move a stage that stands now, and the
 * nodes hosting stages (one pipeline's, gaps allowed) plus spares that fill its gaps are exactly
 * the nodes `fresh` would use, keep their ranges instead of `fresh`'s re-spread. So a standby
 * replacing a lost stage takes that stage's layers and no other stage reloads, while a node
 * joining a whole pipeline (or a loss no spare can cover) still re-plans over everyone.
 * Undefined: use `fresh`.
 */
export function keptPlacement(
  m: ModelFootprint,
  live: readonly ReplicaNode[],
  fresh: Placement,
): Placement | undefined {
  const groups = hostedGroups(m, live);
  if (groups.length !== 1) return undefined;
  // A fresh plan that leaves every standing stage where it is (the usual case while a plan is
  // being loaded: the ranges nodes host came from it) is followed as it is; spares then take
  // its ranges, not a greedy fill, so the plan does not change as nodes announce their ranges.
  const freshAt = new Map(fresh.stages.map((st) => [st.nodeId, st]));
  const moves = groups[0].members.some((n) => {
    const st = freshAt.get(n.id);
    return !st || st.from !== n.hosting!.from || st.to !== n.hosting!.to;
  });
  if (!moves) return undefined;
  const hosting = new Set(groups[0].members.map((n) => n.id));
  const kept = repairGroup(m, groups[0], live.filter((n) => !hosting.has(n.id)));
  if (!kept) return undefined;
  const keptIds = new Set(kept.stages.map((s) => s.nodeId));
  const same = keptIds.size === fresh.stages.length &&
    fresh.stages.every((s) => keptIds.has(s.nodeId));
  return same ? kept : undefined;
}

/**
 * Whether `replicas` leave every stage a live node announces (a valid range) where it is: the
 * same layers in the pipeline the node names as its own.
 */
export function followsHosting(
  m: ModelFootprint,
  live: readonly ReplicaNode[],
  replicas: readonly Placement[],
): boolean {
  const at = new Map<string, { from: number; to: number; head: string }>();
  for (const r of replicas) {
    for (const st of r.stages) {
      at.set(st.nodeId, { from: st.from, to: st.to, head: r.stages[0].nodeId });
    }
  }
  return live.every((n) => {
    if (!validHosting(m, n)) return true;
    const st = at.get(n.id);
    const h = n.hosting!;
    return !!st && st.from === h.from && st.to === h.to && st.head === h.head;
  });
}
