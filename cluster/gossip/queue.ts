/**
 * The transmit-limited queue (memberlist's TransmitLimitedQueue). Broadcasts sent fewer times
 * go first (fresh news spreads fastest); among equals, newer first. A broadcast is dropped after
 * `retransmitLimit` sends, or when a newer one with the same key arrives.
 *
 * @module
 */
import { type Broadcast, retransmitLimit } from "./broadcast.ts";

interface Item {
  b: Broadcast;
  id: number;
  transmits: number;
  live: boolean;
}

/**
 * Broadcast queue ordered by (transmits ascending, age newest-first).
 *
 * @example
 * ```ts
 * const q = new TransmitLimitedQueue(4, () => clusterSize);
 * q.queue({ key: "node-a", msg: aliveBytes });
 * const parts = q.getBroadcasts(2, 1300); // what fits in 1300 bytes
 * ```
 */
export class TransmitLimitedQueue {
  private tiers = new Map<number, Item[]>();
  private byKey = new Map<string, Item>();
  private nextId = 0;
  private count = 0;

  /**
   * @param retransmitMult multiplier of the retransmit limit
   * @param numNodes current cluster size estimate
   */
  constructor(private readonly retransmitMult: number, private readonly numNodes: () => number) {}

  /** Queued broadcasts. */
  get length(): number {
    return this.count;
  }

  /** Whether a broadcast with this key is queued. */
  has(key: string): boolean {
    return this.byKey.has(key);
  }

  /** Add a broadcast, invalidating any queued one with the same key. */
  queue(b: Broadcast): void {
    if (b.key !== null) {
      const old = this.byKey.get(b.key);
      if (old) this.drop(old);
    }
    const item: Item = { b, id: this.nextId++, transmits: 0, live: true };
    this.tier(0).push(item);
    if (b.key !== null) this.byKey.set(b.key, item);
    this.count++;
  }

  private tier(t: number): Item[] {
    let list = this.tiers.get(t);
    if (!list) this.tiers.set(t, list = []);
    return list;
  }

  private drop(item: Item) {
    if (!item.live) return;
    item.live = false;
    this.count--;
    if (item.b.key !== null && this.byKey.get(item.b.key) === item) this.byKey.delete(item.b.key);
    item.b.finished?.();
  }

  /**
   * Take broadcasts that fit in `limit` bytes, each costing `overhead` extra bytes; each taken
   * one counts as transmitted once more.
   */
  getBroadcasts(overhead: number, limit: number): Uint8Array[] {
    if (this.count === 0) return [];
    const max = retransmitLimit(this.retransmitMult, this.numNodes());
    const out: Uint8Array[] = [];
    const moved: Item[] = [];
    const taken = new Set<Item>();
    let left = limit;
    const levels = [...this.tiers.keys()].sort((a, b) => a - b);
    for (const t of levels) {
      if (left < overhead + 1) break; // nothing else fits
      const list = this.tiers.get(t)!;
      // newest first within a tier: walk from the end, so taken items are mostly a suffix
      let lowest = list.length;
      for (let i = list.length - 1; i >= 0 && left >= overhead + 1; i--) {
        const it = list[i];
        if (!it.live) {
          lowest = i;
          continue;
        }
        const cost = overhead + it.b.msg.length;
        if (cost > left) continue;
        left -= cost;
        out.push(it.b.msg);
        it.transmits++;
        lowest = i;
        moved.push(it);
        taken.add(it);
      }
      if (lowest < list.length) {
        const tail = list.slice(lowest).filter((it) => it.live && !taken.has(it));
        list.length = lowest;
        for (const it of tail) list.push(it);
      }
      if (list.length === 0) this.tiers.delete(t);
    }
    for (const it of moved) if (it.transmits >= max) this.drop(it);
    // re-file sent items one tier up, preserving age order (oldest first in the array)
    moved.sort((a, b) => a.id - b.id);
    for (const it of moved) if (it.live) this.insertByAge(this.tier(it.transmits), it);
    return out;
  }

  private insertByAge(list: Item[], it: Item) {
    if (list.length === 0 || list[list.length - 1].id < it.id) {
      list.push(it);
      return;
    }
    let lo = 0, hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid].id < it.id) lo = mid + 1;
      else hi = mid;
    }
    list.splice(lo, 0, it);
  }

  /** Drop everything (e.g. on shutdown), calling `finished` on each. */
  reset(): void {
    for (const list of this.tiers.values()) for (const it of list) this.drop(it);
    this.tiers.clear();
    this.byKey.clear();
  }

  /** Keep only the `max` newest broadcasts (bounded memory in huge clusters). */
  prune(max: number): void {
    if (this.count <= max) return;
    const all = [...this.tiers.values()].flat().filter((i) => i.live).sort((a, b) => b.id - a.id);
    for (const it of all.slice(max)) this.drop(it);
    for (const [t, list] of this.tiers) {
      const live = list.filter((i) => i.live);
      if (live.length) this.tiers.set(t, live);
      else this.tiers.delete(t);
    }
  }
}
