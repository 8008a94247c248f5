/**
 * A tokenizer's vocabulary as a constraint needs it: the bytes each token adds to the output (as
 * the streaming decoder renders it), a byte trie over them, and a fingerprint that names the
 * vocabulary in serialisable sampler settings.
 *
 * Tokenizers register themselves when they are built, so a stage that samples (possibly in
 * another process than the head that accepted the request) finds the vocabulary a constraint's
 * settings name without anything but the fingerprint travelling with them.
 *
 * @module
 */

/** What a constraint reads from a tokenizer (model/tokenizer's Tokenizer has it). */
export interface TokenSource {
  /** Number of tokens. */
  readonly vocabSize: number;
  /** The bytes a token adds to the output; `special = false`: control tokens give nothing. */
  tokenPiece(id: number, special?: boolean): Uint8Array;
  /** End-of-generation ids. */
  readonly eogIds: number[];
}

/** Token bytes in a trie: children as first-child / next-sibling lists, tokens per node. */
export class Vocabulary {
  /** Number of token ids. */
  readonly size: number;
  /** End-of-generation ids: what a complete constrained output may end with. */
  readonly eog: Int32Array;
  /** Fingerprint of the token bytes and end ids (see {@link vocabularyFingerprint}). */
  readonly fingerprint: string;
  /** Each token's bytes as the streaming decoder renders it (empty: control, unused). */
  readonly pieces: Uint8Array[];
  /** Trie node → first child node (-1: none); node 0 is the root (empty prefix). */
  readonly firstChild: Int32Array;
  /** Trie node → next sibling (-1: none). */
  readonly nextSibling: Int32Array;
  /** Trie node → the byte that leads to it. */
  readonly byte: Uint8Array;
  /** Trie node → first token whose bytes end here (-1: none). */
  readonly tokenHead: Int32Array;
  /** Token → next token ending at the same node (-1: none). */
  readonly tokenNext: Int32Array;
  /** Masks computed for recogniser states (see constrain/json.ts), oldest first. */
  readonly masks = new Map<string, Uint8Array>();

  /** Build from `source`; tokens that render as nothing (control, unused) are left out. */
  constructor(source: TokenSource) {
    this.size = source.vocabSize;
    this.eog = Int32Array.from(source.eogIds);
    const pieces: Uint8Array[] = [];
    let total = 1;
    for (let id = 0; id < this.size; id++) {
      const p = source.tokenPiece(id, false);
      pieces.push(p);
      total += p.length;
    }
    this.pieces = pieces;
    this.fingerprint = fingerprint(pieces, this.eog);
    const first = new Int32Array(total).fill(-1);
    const next = new Int32Array(total).fill(-1);
    const byte = new Uint8Array(total);
    const head = new Int32Array(total).fill(-1);
    this.tokenNext = new Int32Array(this.size).fill(-1);
    let nodes = 1;
    for (let id = 0; id < this.size; id++) {
      const p = pieces[id];
      if (p.length === 0) continue;
      let node = 0;
      for (const b of p) {
        let c = first[node];
        while (c >= 0 && byte[c] !== b) c = next[c];
        if (c < 0) {
          c = nodes++;
          byte[c] = b;
          next[c] = first[node];
          first[node] = c;
        }
        node = c;
      }
      this.tokenNext[id] = head[node];
      head[node] = id;
    }
    this.firstChild = first.slice(0, nodes);
    this.nextSibling = next.slice(0, nodes);
    this.byte = byte.slice(0, nodes);
    this.tokenHead = head.slice(0, nodes);
  }
}

/** A 64-bit FNV-1a (two 32-bit lanes) over every piece with its length, then the end ids. */
function fingerprint(pieces: Uint8Array[], eog: Int32Array): string {
  let a = 0x811c9dc5;
  let b = 0x050c5d1f;
  const mix = (x: number) => {
    a = Math.imul(a ^ (x & 0xff), 0x01000193);
    b = Math.imul(b ^ ((x + 0x9e) & 0xff), 0x01000193);
  };
  const mix32 = (x: number) => {
    for (let s = 0; s < 32; s += 8) mix(x >>> s);
  };
  mix32(pieces.length);
  for (const p of pieces) {
    mix32(p.length);
    for (const x of p) mix(x);
  }
  for (const id of eog) mix32(id);
  const hex = (x: number) => (x >>> 0).toString(16).padStart(8, "0");
  return `v${pieces.length}-${hex(a)}${hex(b)}`;
}

const registered: WeakRef<TokenSource>[] = [];
const built = new WeakMap<TokenSource, Vocabulary>();

/** Make a tokenizer findable by its fingerprint (tokenizers call this when built). */
export function registerTokenSource(source: TokenSource): void {
  registered.push(new WeakRef(source));
  // Forget collected tokenizers now and then, so tests that build thousands stay small.
  if (registered.length % 64 === 0) {
    for (let i = registered.length - 1; i >= 0; i--) {
      if (!registered[i].deref()) registered.splice(i, 1);
    }
  }
}

/** The (cached) Vocabulary of `source`; the first call walks the whole vocabulary once. */
export function vocabularyOf(source: TokenSource): Vocabulary {
  let v = built.get(source);
  if (!v) {
    v = new Vocabulary(source);
    built.set(source, v);
  }
  return v;
}

/** The fingerprint constraint settings name `source` by. */
export function vocabularyFingerprint(source: TokenSource): string {
  return vocabularyOf(source).fingerprint;
}

/** The vocabulary of a registered tokenizer with this fingerprint, or undefined. */
export function vocabularyByFingerprint(fp: string): Vocabulary | undefined {
  // Cheap rejection first: the fingerprint starts with the vocabulary size.
  const size = Number(fp.slice(1, fp.indexOf("-")));
  for (const ref of registered) {
    const s = ref.deref();
    if (!s || s.vocabSize !== size) continue;
    const v = vocabularyOf(s);
    if (v.fingerprint === fp) return v;
  }
  return undefined;
}
