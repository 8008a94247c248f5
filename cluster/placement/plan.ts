/**
 * Layer placement: split a model's layers into contiguous ranges, one per node, weighted by
 * each node's measured speed and bounded by its memory budget.
 *
 * The plan is a pure function of (model footprint, candidate nodes), so every agent that sees
 * the same membership computes the same plan; re-planning on join/leave is just calling it again.
 */
import { fnv1a } from "../fnv.ts";

/** Memory a model needs, per layer and for the head/tail extras. */
export interface ModelFootprint {
  readonly nLayers: number;
  /** Weight bytes of each layer (index = layer). */
  readonly layerBytes: readonly number[];
  /** Bytes only the head holds (token embeddings). */
  readonly headBytes: number;
  /** Bytes only the tail holds (output norm + output matrix, or tied embeddings). */
  readonly tailBytes: number;
  /** KV cache bytes per layer that each node must reserve (sessions × positions × kv). */
  readonly kvBytesPerLayer: number;
  /**
   * Bytes counted in both headBytes and tailBytes that one node holding both ends loads only
   * once (tied embeddings: the output matrix is token_embd).
   */
  readonly sharedHeadTailBytes?: number;
}

/** A node that may host layers. */
export interface PlacementNode {
  readonly id: string;
  /** Bytes this node may spend on weights and KV cache. */
  readonly memoryBudget: number;
  /** Relative speed from the start-up calibration (e.g. matvec GFLOP/s); > 0. */
  readonly speed: number;
}

/** One stage of a plan: node `nodeId` runs layers [from, to). */
export interface StageAssignment {
  readonly nodeId: string;
  readonly from: number;
  readonly to: number;
  /** Bytes the stage will hold (weights + KV reservation). */
  readonly bytes: number;
}

/** The whole plan, in pipeline order (stage 0 is the head). */
export interface Placement {
  readonly stages: readonly StageAssignment[];
  readonly nLayers: number;
}

/** The cluster cannot hold the model; the message says how much is missing. */
export class PlacementError extends Error {
  override name = "PlacementError";
}

/** Bytes a node holding layers [from, to) needs, counting head/tail extras and KV. */
export function stageBytes(m: ModelFootprint, from: number, to: number): number {
  return stageWeightBytes(m, from, to) + (to - from) * m.kvBytesPerLayer;
}

/** Weight bytes of layers [from, to) with the head/tail extras they bring (no KV). */
export function stageWeightBytes(m: ModelFootprint, from: number, to: number): number {
  let b = 0;
  for (let l = from; l < to; l++) b += m.layerBytes[l];
  if (from === 0) b += m.headBytes;
  if (to === m.nLayers) b += m.tailBytes;
  if (from === 0 && to === m.nLayers) b -= m.sharedHeadTailBytes ?? 0;
  return b;
}

/** Total bytes the whole model needs. */
export function modelBytes(m: ModelFootprint): number {
  return stageBytes(m, 0, m.nLayers);
}

/**
 * Plan contiguous layer ranges over `nodes`. Nodes are taken in id order (deterministic across
 * agents; largest budget first where id order cannot hold the model); each gets a share of the
 * work (stageWorkBytes) proportional to its speed, never more than its budget holds; nodes that
 * end up with no layers are left out. Throws PlacementError when the nodes' budgets together
 * cannot hold the model.
 */
export function planPlacement(m: ModelFootprint, nodes: readonly PlacementNode[]): Placement {
  if (m.nLayers <= 0) throw new PlacementError("the model has no layers to place");
  if (m.layerBytes.length !== m.nLayers) {
    throw new PlacementError(
      `footprint lists ${m.layerBytes.length} layers, model has ${m.nLayers}`,
    );
  }
  const candidates = [...nodes]
    .filter((n) => n.memoryBudget > 0 && n.speed > 0)
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const need = modelBytes(m);
  const have = candidates.reduce((s, n) => s + n.memoryBudget, 0);
  if (candidates.length === 0) {
    throw new PlacementError(
      `no node can host layers: the model needs ${fmt(need)} and no live node offers memory`,
    );
  }
  // Try with all candidates; drop any node that cannot hold even one layer in its slot and retry.
  let pool = candidates;
  while (pool.length > 0) {
    // Id order first; where it fails, largest budget first (a small node whose id sorts first
    // would have to hold the embeddings, or be skipped, and dropping nodes never helps a fixed
    // order): the model fits whenever some order of these nodes holds it greedily.
    const plan = fill(m, pool) ?? fill(m, [...pool].sort(byBudget));
    if (plan) return plan;
    // The slowest/smallest node is the likeliest misfit: drop the one with the least budget.
    const smallest = pool.reduce((a, b) => (b.memoryBudget < a.memoryBudget ? b : a));
    pool = pool.filter((n) => n !== smallest);
  }
  throw new PlacementError(
    `the cluster cannot hold the model: it needs ${fmt(need)} (weights + KV cache) but the ` +
      `${candidates.length} live node(s) offer ${fmt(have)} in all, and layers cannot be split ` +
      `across nodes — add nodes or raise --memory-budget`,
  );
}

/** Largest budget first, then id: an order every agent derives alike. */
export function byBudget(a: PlacementNode, b: PlacementNode): number {
  return b.memoryBudget - a.memoryBudget || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/**
 * Bytes one decode step reads in layers [from, to): their weights, and the output matrix at the
 * tail (a vocabulary-wide matmul per token; an 8B model's is worth 2.4 layers). The embedding is
 * a row lookup, no work. Decode is memory-bound, so this is the stage's time per token.
 */
export function stageWorkBytes(m: ModelFootprint, from: number, to: number): number {
  let b = 0;
  for (let l = from; l < to; l++) b += m.layerBytes[l];
  return to === m.nLayers ? b + m.tailBytes : b;
}

/**
 * Greedy contiguous fill in node order with speed-proportional shares of the work (not of the
 * layer count: the tail's output matrix is work too); undefined if it fails.
 */
function fill(m: ModelFootprint, pool: readonly PlacementNode[]): Placement | undefined {
  const stages: StageAssignment[] = [];
  let from = 0;
  let speedLeft = pool.reduce((s, n) => s + n.speed, 0);
  for (let i = 0; i < pool.length && from < m.nLayers; i++) {
    const node = pool[i];
    const isLast = i === pool.length - 1;
    // Speed-proportional share of the work left: the range whose work is nearest it (ties take
    // the longer range), at least one layer.
    const target = stageWorkBytes(m, from, m.nLayers) * node.speed / speedLeft;
    speedLeft -= node.speed;
    let to = isLast ? m.nLayers : from + 1;
    while (
      to < m.nLayers &&
      Math.abs(stageWorkBytes(m, from, to + 1) - target) <=
        Math.abs(stageWorkBytes(m, from, to) - target)
    ) to++;
    while (to > from && stageBytes(m, from, to) > node.memoryBudget) to--;
    if (to === from) {
      if (isLast) return undefined;
      continue; // this node cannot take the next layer; the next node tries
    }
    // If the rest cannot fit on the remaining nodes, take more here while the budget allows.
    while (
      to < m.nLayers && !restFits(m, to, pool.slice(i + 1)) &&
      stageBytes(m, from, to + 1) <= node.memoryBudget
    ) to++;
    stages.push({ nodeId: node.id, from, to, bytes: stageBytes(m, from, to) });
    from = to;
  }
  if (from < m.nLayers) return undefined;
  return { stages, nLayers: m.nLayers };
}

/** Whether layers [from, nLayers) fit on `rest` taken greedily in order. */
function restFits(m: ModelFootprint, from: number, rest: readonly PlacementNode[]): boolean {
  let at = from;
  for (const n of rest) {
    let to = at;
    while (to < m.nLayers && stageBytes(m, at, to + 1) <= n.memoryBudget) to++;
    at = to;
    if (at === m.nLayers) return true;
  }
  return at === m.nLayers;
}

function fmt(bytes: number): string {
  if (bytes >= 1e9) return `${(bytes / 1e9).toFixed(2)} GB`;
  if (bytes >= 1e6) return `${(bytes / 1e6).toFixed(1)} MB`;
  if (bytes >= 1e3) return `${(bytes / 1e3).toFixed(1)} kB`;
  return `${bytes} B`;
}

/**
 * The placement epoch of `plan` for model `model`: a 32-bit FNV-1a hash of the model and every
 * stage, never 0. Every agent computes the same plan from the same gossip view, so it computes
 * the same epoch without a coordinator; a stage whose epoch differs from a head's planned with
 * another view.
 */
export function planEpoch(plan: Placement, model: string): bigint {
  const key = `${model}|${plan.nLayers}|` +
    plan.stages.map((s) => `${s.nodeId}:${s.from}-${s.to}`).join(",");
  const h = fnv1a(key);
  return BigInt(h === 0 ? 1 : h);
}
