/**
 * A stage's prefix KV cache: the keys and values its layers computed for recently served token
 * prefixes, kept in fixed-size blocks of tokens on a radix tree (as SGLang's RadixAttention and
 * vLLM's automatic prefix caching do), so a request that starts like an earlier one — the same
 * system prompt, the same chat history — computes only its new suffix.
 *
 * - A block holds `blockTokens` positions of every layer of the stage, as the f32 rows the layers
 *   stored into the KV cache (after RoPE and any q/k norm), so restoring it is the same
 *   `storeKV` the forward pass would have made: output with and without the cache is
 *   bit-identical on every backend (tests/model/prefix_cache_test.ts).
 * - A block's KV depends on every token before it, so a block is a node whose path from the root
 *   spells the whole prefix; siblings differ in their own tokens.
 * - Blocks are shared read-only: a new session copies the blocks it matches into its own KV cache
 *   (one `storeKV` per layer and block, a memory copy), so any number of concurrent sessions can
 *   start from the same prefix. (Paging sessions' caches onto the blocks in place would save the
 *   copy; our KV caches are contiguous per session.)
 * - Full blocks are captured while prompts (and generated tokens) run; partial blocks are never
 *   kept. Leaves are evicted least-recently-used first to stay within the byte budget.
 * - The budget holds the blocks being filled too (each session being captured holds one, two
 *   while a pass crosses a boundary): a session whose next block finds no room, even after
 *   evictions, or whose block the backend cannot allocate, stops being captured, and its pass
 *   runs as without a cache. (Counting only finished blocks let 8 sessions hold 6× the budget.)
 */
import type { Backend, Buf, KVCache } from "../kernels/backend.ts";

/** Positions per cached block unless a stage asks for another size. */
export const PREFIX_CACHE_BLOCK_TOKENS = 32;

/** Sizing of a prefix cache. */
export interface PrefixCacheOptions {
  /** Layers of the stage (KV caches' nLayers). */
  nLayers: number;
  /** nKVHeads × headDim. */
  kvDim: number;
  /** Most bytes the blocks may take (0 turns the cache off). */
  budgetBytes: number;
  /** Tokens per block (default 32). */
  blockTokens?: number;
}

/** One cached block: its tokens, and K and V rows `[nLayers × blockTokens × kvDim]`. */
interface Block {
  readonly ids: Int32Array;
  readonly k: Buf;
  readonly v: Buf;
  readonly parent: Node;
  readonly children: Map<string, Block>;
  lastUsed: number;
  /** Set when evicted: sessions still pointing here stop capturing. */
  evicted: boolean;
}

/** The root (no tokens) or a block. */
type Node = Block | { readonly children: Map<string, Block> };

/** A block being filled by one session's passes, inserted when full. */
interface Partial {
  readonly index: number;
  readonly ids: Int32Array;
  readonly k: Buf;
  readonly v: Buf;
}

/** What a session has told the cache: its ids so far and where it stands in the tree. */
interface Capture {
  /** Ids of positions 0..ids.length-1 (the session's positions known so far). */
  ids: number[];
  /** Deepest full block of this session that is in the tree (the next insert's parent). */
  node: Node;
  /** Full blocks so far (the next block's index). */
  blocks: number;
  /** Blocks being filled, in order (a pass may span several; each is inserted once full). */
  partials: Partial[];
  /** Set when no room was left for block `stopAt`: blocks before it are kept, then it ends. */
  stopAt?: number;
}

/** One pass's copies for one session: rows [offset, offset + rows) of the pass's K/V buffers. */
export interface CapturePlan {
  readonly session: object;
  readonly copies: { block: Partial; from: Int32Array; to: Int32Array }[];
}

/** Counters for logs, metrics and the bench. */
export interface PrefixCacheStats {
  /** Blocks and bytes held now. */
  blocks: number;
  bytes: number;
  /** Tokens restored from the cache, and tokens looked up, since the start. */
  hitTokens: number;
  lookupTokens: number;
  evictions: number;
}

const key = (ids: ArrayLike<number>): string => Array.prototype.join.call(ids, ",");

/** See the module comment. */
export class PrefixCache {
  readonly blockTokens: number;
  readonly blockBytes: number;
  /**
   * One tree per variant of the KV (restore()'s `variant`: a LongRoPE model's sessions rotate
   * with one of two factor sets, and a block of one set is no prefix of the other's).
   */
  readonly #roots = new Map<string, Node>();
  /**
   * Blocks without children, the only ones eviction may take: it looks at these alone, not at
   * the whole tree (a large budget on a small model holds ~10⁴ blocks, and a full cache evicts
   * one per block it captures).
   */
  readonly #leaves = new Set<Block>();
  readonly #captures = new WeakMap<object, Capture>();
  #blocks = 0;
  /** Blocks being filled (allocated, counted in the budget, not yet in the tree). */
  #partials = 0;
  #clock = 0;
  #hitTokens = 0;
  #lookupTokens = 0;
  #evictions = 0;

  constructor(readonly backend: Backend, readonly opts: PrefixCacheOptions) {
    this.blockTokens = opts.blockTokens ?? PREFIX_CACHE_BLOCK_TOKENS;
    if (!Number.isInteger(this.blockTokens) || this.blockTokens < 1) {
      throw new Error(`prefix cache: blockTokens must be a positive integer`);
    }
    this.blockBytes = 2 * opts.nLayers * this.blockTokens * opts.kvDim * 4;
  }

  /** Whether blocks can be kept at all (the budget holds at least one). */
  get enabled(): boolean {
    return this.opts.budgetBytes >= this.blockBytes;
  }

  /** Current counters (bytes: cached blocks and blocks being filled). */
  stats(): PrefixCacheStats {
    return {
      blocks: this.#blocks,
      bytes: (this.#blocks + this.#partials) * this.blockBytes,
      hitTokens: this.#hitTokens,
      lookupTokens: this.#lookupTokens,
      evictions: this.#evictions,
    };
  }

  /**
   * Copy the longest cached prefix of `ids` into `kv` (positions 0..n-1) and start capturing the
   * session's blocks. Leaves at least one token of `ids` uncached (its pass makes the logits).
   * Blocks are shared only between sessions of the same `variant` (the KV of the same ids
   * differs between them). Returns n, the positions restored.
   */
  restore(session: object, kv: KVCache, ids: ArrayLike<number>, variant = ""): number {
    const B = this.blockTokens;
    let root = this.#roots.get(variant);
    if (!root) this.#roots.set(variant, root = { children: new Map() });
    const capture: Capture = { ids: [], node: root, blocks: 0, partials: [] };
    this.#captures.set(session, capture);
    if (!this.enabled) return 0;
    this.#lookupTokens += ids.length;
    const most = Math.floor((ids.length - 1) / B);
    const path: Block[] = [];
    let node: Node = root;
    for (let b = 0; b < most; b++) {
      const next = node.children.get(key(Array.prototype.slice.call(ids, b * B, (b + 1) * B)));
      if (!next) break;
      path.push(next);
      node = next;
    }
    const now = ++this.#clock;
    for (const [b, block] of path.entries()) {
      block.lastUsed = now;
      for (let l = 0; l < this.opts.nLayers; l++) {
        this.backend.storeKV(kv, l, block.k, block.v, b * B, B, l * B);
      }
    }
    const n = path.length * B;
    capture.ids = Array.prototype.slice.call(ids, 0, n);
    capture.node = node;
    capture.blocks = path.length;
    this.#hitTokens += n;
    return n;
  }

  /**
   * Plan the copies of one pass of `session`: its rows `[offset, offset + ids.length)` in the
   * pass hold positions `pos..pos + ids.length - 1` with these ids. Undefined when the session
   * is not being captured (no restore() call, or a pass came without ids): nothing to copy.
   */
  plan(
    session: object,
    pos: number,
    ids: ArrayLike<number> | undefined,
    offset: number,
  ): CapturePlan | undefined {
    const c = this.#captures.get(session);
    if (!c || !this.enabled) return undefined;
    if (!ids || pos !== c.ids.length) {
      this.#drop(session, c);
      return undefined;
    }
    const B = this.blockTokens;
    if (c.stopAt !== undefined) {
      this.#drop(session, c);
      return undefined;
    }
    // The blocks this pass starts, reserved (and allocated) before anything is copied, from the
    // first: where room runs out the capture keeps the blocks before and then ends, and the
    // pass runs on either way.
    for (let index = Math.floor(pos / B); index * B < pos + ids.length; index++) {
      if (c.partials.some((q) => q.index === index)) continue;
      const block = this.#newPartial(c, index);
      if (!block) {
        c.stopAt = index;
        break;
      }
      c.partials.push(block);
    }
    if (c.partials.length === 0) {
      this.#drop(session, c);
      return undefined;
    }
    const plan: CapturePlan = { session, copies: [] };
    const capturedEnd = c.stopAt === undefined
      ? ids.length
      : Math.min(ids.length, c.stopAt * B - pos);
    for (let i = 0; i < capturedEnd;) {
      const p = pos + i;
      const index = Math.floor(p / B);
      const end = Math.min(capturedEnd, (index + 1) * B - pos);
      const block = c.partials.find((q) => q.index === index)!;
      const n = end - i;
      const from = new Int32Array(n);
      const to = new Int32Array(n);
      for (let t = 0; t < n; t++) {
        from[t] = offset + i + t;
        to[t] = (p + t) % B;
        block.ids[(p + t) % B] = ids[i + t];
      }
      plan.copies.push({ block, from, to });
      i = end;
    }
    for (let i = 0; i < ids.length; i++) c.ids.push(ids[i]);
    return plan;
  }

  /**
   * A new block being filled for `c`, within the budget (evicting least recently used leaves
   * off `c`'s own path); undefined when there is no room or the backend cannot allocate it.
   */
  #newPartial(c: Capture, index: number): Partial | undefined {
    while ((this.#blocks + this.#partials + 1) * this.blockBytes > this.opts.budgetBytes) {
      if (!this.#evictOne(c.node)) return undefined;
    }
    const rows = this.opts.nLayers * this.blockTokens * this.opts.kvDim;
    let k: Buf | undefined;
    try {
      k = this.backend.buffer(rows);
      const v = this.backend.buffer(rows);
      this.#partials++;
      return { index, ids: new Int32Array(this.blockTokens), k, v };
    } catch {
      // The backend's memory is full (its KV caches and activations share it): the cache is an
      // optimisation, so the pass runs without capturing rather than failing, neighbours and all.
      if (k) this.backend.free(k);
      return undefined;
    }
  }

  /** Copy layer `l`'s rows of a planned pass out of the pass's K and V buffers. */
  copyLayer(plan: CapturePlan, l: number, k: Buf, v: Buf): void {
    const B = this.blockTokens;
    for (const cp of plan.copies) {
      const to = cp.to.map((r) => l * B + r);
      this.backend.copyRows(k, cp.from, cp.block.k, to, this.opts.kvDim);
      this.backend.copyRows(v, cp.from, cp.block.v, to, this.opts.kvDim);
    }
  }

  /** After every layer ran: insert the session's blocks that this pass filled. */
  commit(plan: CapturePlan): void {
    const c = this.#captures.get(plan.session);
    if (!c) return;
    const B = this.blockTokens;
    while (c.partials.length && c.ids.length >= (c.partials[0].index + 1) * B) {
      const node = this.#insert(c.node, c.partials.shift()!);
      if (!node) {
        // Nothing to hang the session's next blocks on: counting this one anyway put c.blocks
        // past c.node's depth, and a truncate would then walk above the root.
        this.#drop(plan.session, c);
        return;
      }
      c.node = node;
      c.blocks++;
    }
    // Ran out of room: the blocks before it are in, nothing more is captured.
    if (c.stopAt !== undefined && c.partials.length === 0) this.#drop(plan.session, c);
  }

  /**
   * Keep only the first `n` positions of what restore() gave a session (a chain of stages starts
   * at the least any of them restored): its capture continues from there. A cut inside a block
   * stops capturing the session.
   */
  truncate(session: object, n: number): void {
    const c = this.#captures.get(session);
    if (!c || n >= c.ids.length) return;
    if (n % this.blockTokens !== 0 || c.partials.length) {
      // Right after restore() (no pass yet), the positions given back were counted as restored.
      if (c.partials.length === 0) this.#hitTokens -= c.ids.length - n;
      this.#drop(session, c);
      return;
    }
    const keep = n / this.blockTokens;
    for (; c.blocks > keep; c.blocks--) c.node = (c.node as Block).parent;
    // The positions given back were counted as restored (restore() runs just before).
    this.#hitTokens -= c.ids.length - n;
    c.ids.length = n;
  }

  /** Stop capturing a session (it ended); its partial block is dropped. */
  release(session: object): void {
    const c = this.#captures.get(session);
    if (c) this.#drop(session, c);
  }

  /**
   * Give one block's memory back to the backend (the least recently used leaf), for an
   * allocation the backend could not make; false when the cache holds none.
   */
  shrink(): boolean {
    // A root protects nothing: any leaf may go.
    return this.#evictOne({ children: new Map() });
  }

  /** Free every block (the stage is unloading). */
  clear(): void {
    const all: Block[] = [];
    const walk = (n: Node) => {
      for (const b of n.children.values()) {
        all.push(b);
        walk(b);
      }
    };
    for (const root of this.#roots.values()) walk(root);
    // A session still capturing would otherwise hang its next blocks under a freed one (and
    // evicting that one later would free it twice): marked evicted, it stops capturing.
    for (const b of all) {
      b.evicted = true;
      this.#freeBlock(b);
    }
    for (const root of this.#roots.values()) root.children.clear();
    this.#leaves.clear();
    this.#blocks = 0;
  }

  /** Hang `p` under `parent` (or the same block another session hung first); undefined: not. */
  #insert(parent: Node, p: Partial): Node | undefined {
    const k = key(p.ids);
    if ("evicted" in parent && parent.evicted) {
      // the session's last block was evicted under it: what follows has no parent to hang on
      this.#freePartial(p);
      return undefined;
    }
    const have = parent.children.get(k);
    const now = ++this.#clock;
    if (have) {
      // another session cached the same block first: keep that one
      have.lastUsed = now;
      this.#freePartial(p);
      return have;
    }
    // Its bytes were reserved when it was started (#newPartial): it only changes hands.
    this.#partials--;
    const block: Block = {
      ids: p.ids,
      k: p.k,
      v: p.v,
      parent,
      children: new Map(),
      lastUsed: now,
      evicted: false,
    };
    parent.children.set(k, block);
    this.#leaves.add(block);
    if ("parent" in parent) this.#leaves.delete(parent as Block);
    this.#blocks++;
    return block;
  }

  /** Evict the least recently used leaf other than `keep` and its ancestors; false if none. */
  #evictOne(keep: Node): boolean {
    const protect = new Set<Node>();
    for (let n: Node | undefined = keep; n && "parent" in n; n = n.parent) protect.add(n);
    let victim: Block | undefined;
    for (const b of this.#leaves) {
      if (!protect.has(b) && (!victim || b.lastUsed < victim.lastUsed)) victim = b;
    }
    if (!victim) return false;
    const parent = victim.parent;
    parent.children.delete(key(victim.ids));
    this.#leaves.delete(victim);
    if ("parent" in parent && parent.children.size === 0) this.#leaves.add(parent as Block);
    victim.evicted = true;
    this.#freeBlock(victim);
    this.#blocks--;
    this.#evictions++;
    return true;
  }

  #drop(session: object, c: Capture): void {
    for (const p of c.partials) this.#freePartial(p);
    this.#captures.delete(session);
  }

  #freeBlock(b: Block): void {
    this.backend.free(b.k);
    this.backend.free(b.v);
  }

  #freePartial(p: Partial): void {
    this.backend.free(p.k);
    this.backend.free(p.v);
    this.#partials--;
  }
}
