/**
 * Which replica each recent prompt prefix went to, so that a chat's next turn (the same
 * system prompt and history, plus a reply and a new message) goes where the stages' prefix
 * caches hold that history, instead of wherever load alone points. As SGLang's cache-aware
 * router does, on the head's own record (no replica tells which prefixes it holds): prompts are
 * keyed per block of {@linkcode PREFIX_CACHE_BLOCK_TOKENS} tokens, the unit a stage caches, and
 * the longest recorded prefix wins.
 *
 * A hint only: a stale or colliding entry costs a cache miss, never a wrong token (the stages
 * match cached blocks by their token ids, model/prefix_cache.ts).
 *
 * @module
 */
import { PREFIX_CACHE_BLOCK_TOKENS } from "../../model/prefix_cache.ts";

/** Block prefixes remembered at most (each costs a map entry; the oldest go first). */
export const PREFIX_ROUTES_MAX = 65_536;

/** A prefix's replica: where the longest recorded prefix of a prompt was sent. */
export interface PrefixHint {
  replica: string;
  /** Tokens of the prompt that prefix covers (a multiple of the block size). */
  tokens: number;
}

/** Block-prefix → replica, least recently used forgotten first. */
export class PrefixRoutes {
  /** Map order is use order: an entry used again is re-inserted at the end. */
  readonly #routes = new Map<number, string>();

  constructor(
    private readonly maxEntries = PREFIX_ROUTES_MAX,
    private readonly blockTokens = PREFIX_CACHE_BLOCK_TOKENS,
  ) {}

  /** Number of block prefixes remembered. */
  get size(): number {
    return this.#routes.size;
  }

  /**
   * The keys of `ids`' whole blocks, cumulative: key i names blocks 0..i together. Two 32-bit
   * FNV-1a lanes (different offsets) make a 53-bit key, so unrelated prompts rarely share one.
   */
  keys(ids: ArrayLike<number>): number[] {
    const out: number[] = [];
    let a = 0x811c9dc5;
    let b = 0x01000193;
    const whole = ids.length - ids.length % this.blockTokens;
    for (let i = 0; i < whole; i++) {
      const t = ids[i] | 0;
      for (let s = 0; s < 32; s += 8) {
        const byte = (t >>> s) & 0xff;
        a = Math.imul(a ^ byte, 0x01000193) >>> 0;
        b = Math.imul(b ^ byte, 0x01000193) >>> 0;
      }
      if ((i + 1) % this.blockTokens === 0) out.push(a * 0x200000 + (b & 0x1fffff));
    }
    return out;
  }

  /**
   * The replica the longest recorded prefix went to, of a prompt whose {@linkcode keys} are
   * `keys`; undefined when none did.
   */
  lookup(keys: readonly number[]): PrefixHint | undefined {
    for (let i = keys.length - 1; i >= 0; i--) {
      const replica = this.#routes.get(keys[i]);
      if (replica !== undefined) return { replica, tokens: (i + 1) * this.blockTokens };
    }
    return undefined;
  }

  /** The prompt whose {@linkcode keys} are `keys` goes to `replica`: each block prefix points there. */
  record(keys: readonly number[], replica: string): void {
    for (const k of keys) {
      this.#routes.delete(k);
      this.#routes.set(k, replica);
    }
    while (this.#routes.size > this.maxEntries) {
      this.#routes.delete(this.#routes.keys().next().value!);
    }
  }
}
