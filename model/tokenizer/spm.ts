/**
 * SentencePiece-BPE ("llama" tokenizer model): a port of llama.cpp's llm_tokenizer_spm_session.
 * Start from single characters, repeatedly merge the adjacent pair whose concatenation is the
 * vocabulary piece with the highest score, then emit pieces, falling back to `<0xXX>` bytes.
 */
import { StdPriorityQueue } from "./heap.ts";
import { utf8 } from "./unicode.ts";

/** What the SPM merge loop needs from the vocabulary. */
export interface SpmVocab {
  /** Piece text → id. */
  readonly tokenToId: ReadonlyMap<string, number>;
  /** Score of each id (higher merges first). */
  readonly scores: Float32Array;
  /** Id for a raw byte (`<0xXX>`, else the one-byte piece), or undefined. */
  byteToToken(b: number): number | undefined;
  /** Id used when a byte has no token at all. */
  readonly unk: number | null;
}

interface Bigram {
  left: number;
  right: number;
  score: number;
  size: number;
}

// llama.cpp: (l.score < r.score) || (l.score == r.score && l.left > r.left)
const lessBigram = (l: Bigram, r: Bigram) =>
  l.score < r.score || (l.score === r.score && l.left > r.left);

/** Tokenizes one already-escaped fragment (spaces are ▁), appending ids to `out`. */
export function spmTokenize(vocab: SpmVocab, text: string, out: number[]): void {
  if (text.length === 0) return;
  // Symbols are codepoints; start/len index into `text` (UTF-16 units, used consistently).
  const start: number[] = [];
  const len: number[] = [];
  const prev: number[] = [];
  const next: number[] = [];
  for (let i = 0, k = 0; i < text.length; k++) {
    const w = text.codePointAt(i)! > 0xffff ? 2 : 1;
    start.push(i);
    len.push(w);
    prev.push(k - 1);
    i += w;
    next.push(i === text.length ? -1 : k + 1);
  }
  const queue = new StdPriorityQueue<Bigram>(lessBigram);
  const revMerge = new Map<string, [number, number]>();

  const tryAddBigram = (left: number, right: number) => {
    if (left === -1 || right === -1) return;
    const piece = text.substr(start[left], len[left] + len[right]);
    const id = vocab.tokenToId.get(piece);
    if (id === undefined || id >= vocab.scores.length) return;
    queue.push({ left, right, score: vocab.scores[id], size: piece.length });
    revMerge.set(piece, [left, right]);
  };

  for (let i = 1; i < start.length; i++) tryAddBigram(i - 1, i);

  while (queue.size > 0) {
    const b = queue.pop()!;
    const l = b.left;
    const r = b.right;
    // Stale entry: one side was merged away or grew since the bigram was queued.
    if (len[l] === 0 || len[r] === 0 || len[l] + len[r] !== b.size) continue;
    len[l] += len[r];
    len[r] = 0;
    next[l] = next[r];
    if (next[r] >= 0) prev[next[r]] = l;
    tryAddBigram(prev[l], l);
    tryAddBigram(l, next[l]);
  }

  const resegment = (sym: number) => {
    const piece = text.substr(start[sym], len[sym]);
    const id = vocab.tokenToId.get(piece);
    if (id !== undefined) {
      out.push(id);
      return;
    }
    const p = revMerge.get(piece);
    if (p === undefined) {
      // Byte fallback: every UTF-8 byte of the unknown piece becomes its own token.
      for (const byte of utf8(piece)) {
        const bid = vocab.byteToToken(byte);
        if (bid !== undefined) out.push(bid);
        else if (vocab.unk !== null) out.push(vocab.unk);
        else throw new Error(`SPM vocabulary has no token for byte 0x${hex2(byte)} and no <unk>`);
      }
      return;
    }
    resegment(p[0]);
    resegment(p[1]);
  };
  for (let i = 0; i !== -1; i = next[i]) resegment(i);
}

/** Two upper-case hex digits, as in `<0x0A>`. */
export function hex2(b: number): string {
  return b.toString(16).toUpperCase().padStart(2, "0");
}
