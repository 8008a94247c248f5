/**
 * Byte-level BPE ("gpt2" tokenizer model): a port of llama.cpp's llm_tokenizer_bpe_session.
 * Each pre-tokenized word is byte-encoded (GPT-2 mapping), split into characters, and merged
 * pairwise by merge rank (lowest first) until no ranked pair remains.
 */
import { StdPriorityQueue } from "./heap.ts";

/** What the BPE merge loop needs from the vocabulary. */
export interface BpeVocab {
  /** Piece text → id. */
  readonly tokenToId: ReadonlyMap<string, number>;
  /** "left right" → merge rank (lower merges first). */
  readonly mergeRanks: ReadonlyMap<string, number>;
  /** Llama 3 style: a word that is itself a token is emitted without merging. */
  readonly ignoreMerges: boolean;
}

interface Bigram {
  left: number;
  right: number;
  text: string;
  rank: number;
}

// llama.cpp: l.rank > r.rank || (l.rank == r.rank && l.left > r.left)
const lessBigram = (l: Bigram, r: Bigram) =>
  l.rank > r.rank || (l.rank === r.rank && l.left > r.left);

/** Tokenizes one byte-encoded word, appending ids to `out`. */
export function bpeTokenizeWord(vocab: BpeVocab, word: string, out: number[]): void {
  if (word.length === 0) return;
  if (vocab.ignoreMerges) {
    const id = vocab.tokenToId.get(word);
    if (id !== undefined) {
      out.push(id);
      return;
    }
  }
  // Fast path: a one-character word needs no merging.
  const n = word.length; // byte-encoded chars are all in the BMP: one UTF-16 unit each
  if (n === 1) {
    emit(vocab, word, out);
    return;
  }
  const start = new Int32Array(n);
  const len = new Int32Array(n);
  const prev = new Int32Array(n);
  const next = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    start[i] = i;
    len[i] = 1;
    prev[i] = i - 1;
    next[i] = i + 1 === n ? -1 : i + 1;
  }
  const queue = new StdPriorityQueue<Bigram>(lessBigram);
  const addBigram = (left: number, right: number) => {
    if (left === -1 || right === -1) return;
    const a = word.substr(start[left], len[left]);
    const b = word.substr(start[right], len[right]);
    const rank = vocab.mergeRanks.get(a + " " + b);
    if (rank === undefined) return;
    queue.push({ left, right, text: a + b, rank });
  };
  for (let i = 1; i < n; i++) addBigram(i - 1, i);

  while (queue.size > 0) {
    const bg = queue.pop()!;
    const l = bg.left;
    const r = bg.right;
    if (len[l] === 0 || len[r] === 0) continue;
    // Outdated: a side changed since queuing (llama.cpp compares the texts).
    if (word.substr(start[l], len[l]) + word.substr(start[r], len[r]) !== bg.text) continue;
    len[l] += len[r];
    len[r] = 0;
    next[l] = next[r];
    if (next[r] >= 0) prev[next[r]] = l;
    addBigram(prev[l], l);
    addBigram(l, next[l]);
  }
  for (let i = 0; i !== -1; i = next[i]) {
    if (len[i] > 0) emit(vocab, word.substr(start[i], len[i]), out);
  }
}

function emit(vocab: BpeVocab, piece: string, out: number[]): void {
  const id = vocab.tokenToId.get(piece);
  if (id !== undefined) {
    out.push(id);
    return;
  }
  // llama.cpp looks up each UTF-8 byte of the piece as a one-byte string; only ASCII bytes can
  // match, so pieces missing from the vocabulary lose their non-ASCII characters, as there.
  for (let i = 0; i < piece.length; i++) {
    const c = piece.charCodeAt(i);
    if (c < 0x80) {
      const bid = vocab.tokenToId.get(piece[i]);
      if (bid !== undefined) out.push(bid);
    }
  }
}
