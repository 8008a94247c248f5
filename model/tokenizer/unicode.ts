/**
 * Unicode helpers shared by the tokenizers, written to behave like llama.cpp's `unicode.cpp`:
 * codepoint classes (letter, number, whitespace), GPT-2's byte ↔ unicode mapping, and the
 * pre-tokenizers that split text into words before BPE.
 *
 * Why custom code instead of one JS regex per pre-tokenizer: llama.cpp does not run the
 * tokenizer.json regexes literally. For GPT-2 and Llama 3 it runs hand-written state machines
 * (`unicode_regex_split_custom_gpt2/llama3`), and for the others std::regex over a "collapsed"
 * text. Both treat `\s` as Unicode White_Space (which includes U+0085 but not U+FEFF, unlike
 * JS `\s`), so we port the state machines and give the regexes an explicit whitespace class.
 */

/** Unicode White_Space, exactly llama.cpp's `unicode_set_whitespace`. */
const WHITESPACE_CPTS = [
  0x09,
  0x0a,
  0x0b,
  0x0c,
  0x0d,
  0x20,
  0x85,
  0xa0,
  0x1680,
  0x2000,
  0x2001,
  0x2002,
  0x2003,
  0x2004,
  0x2005,
  0x2006,
  0x2007,
  0x2008,
  0x2009,
  0x200a,
  0x2028,
  0x2029,
  0x202f,
  0x205f,
  0x3000,
];
const WHITESPACE = new Set(WHITESPACE_CPTS);

/** The same set as a regex character-class body (for the std::regex-style pre-tokenizers). */
export const WS_CLASS =
  "\\t\\n\\v\\f\\r \\x85\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000";

const F_COMPUTED = 1;
const F_LETTER = 2;
const F_NUMBER = 4;
const F_WS = 8;
// Lazily filled per codepoint: a full table up front would cost ~1M regex tests at startup.
const flagTable = new Uint8Array(0x110000);
const RE_L = /^\p{L}$/u;
const RE_N = /^\p{N}$/u;

function flagsOf(cp: number): number {
  let f = flagTable[cp];
  if (f === 0) {
    const s = String.fromCodePoint(cp);
    f = F_COMPUTED;
    if (WHITESPACE.has(cp)) f |= F_WS;
    else if (RE_L.test(s)) f |= F_LETTER;
    else if (RE_N.test(s)) f |= F_NUMBER;
    flagTable[cp] = f;
  }
  return f;
}

/** GPT-2's byte → printable codepoint table (bytes that print as themselves keep their value). */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const map: (string | undefined)[] = new Array(256);
  const keep = (lo: number, hi: number) => {
    for (let c = lo; c <= hi; c++) map[c] = String.fromCharCode(c);
  };
  keep(0x21, 0x7e);
  keep(0xa1, 0xac);
  keep(0xae, 0xff);
  let n = 0;
  for (let c = 0; c < 256; c++) {
    if (map[c] === undefined) map[c] = String.fromCharCode(256 + n++);
  }
  return map as string[];
})();

/** Inverse of BYTE_TO_CHAR: printable char → byte. */
export const CHAR_TO_BYTE: ReadonlyMap<string, number> = new Map(
  BYTE_TO_CHAR.map((ch, b) => [ch, b] as [string, number]),
);

const encoder = new TextEncoder();

/** UTF-8 bytes of a string (lone surrogates become U+FFFD, as llama.cpp's decoder would). */
export function utf8(s: string): Uint8Array {
  return encoder.encode(s);
}

/** Byte-level encoding of a word: its UTF-8 bytes, each mapped through BYTE_TO_CHAR. */
export function byteEncode(word: string): string {
  // Pure ASCII words skip TextEncoder: most words are ASCII and this is the hot path.
  let ascii = true;
  for (let i = 0; i < word.length; i++) {
    if (word.charCodeAt(i) >= 0x80) {
      ascii = false;
      break;
    }
  }
  let out = "";
  if (ascii) {
    for (let i = 0; i < word.length; i++) out += BYTE_TO_CHAR[word.charCodeAt(i)];
    return out;
  }
  for (const b of encoder.encode(word)) out += BYTE_TO_CHAR[b];
  return out;
}

/** One step of a pre-tokenizer: a llama.cpp custom splitter or a regex. */
export type SplitStep =
  | { readonly kind: "gpt2" }
  | { readonly kind: "llama3" }
  | { readonly kind: "regex"; readonly re: RegExp };

/** Applies the steps in order; each splits every piece the previous ones produced. */
export function preTokenize(text: string, steps: readonly SplitStep[]): string[] {
  let pieces = [text];
  for (const step of steps) {
    const next: string[] = [];
    for (const p of pieces) {
      if (step.kind === "regex") splitRegex(p, step.re, next);
      else splitCustom(p, step.kind === "llama3", next);
    }
    pieces = next;
  }
  return pieces;
}

/** std::regex_iterator-style split: matches and the gaps between them are all kept. */
function splitRegex(s: string, re: RegExp, out: string[]): void {
  let last = 0;
  for (const m of s.matchAll(re)) {
    const at = m.index!;
    if (m[0].length === 0) continue;
    if (at > last) out.push(s.slice(last, at));
    out.push(m[0]);
    last = at + m[0].length;
  }
  if (last < s.length) out.push(s.slice(last));
}

const CR = 0x0d;
const LF = 0x0a;
const SPACE = 0x20;
const APOS = 0x27;

/**
 * Port of unicode_regex_split_custom_gpt2 / _llama3. Positions are codepoint indices;
 * outside the piece, flags are "none" (OUT_OF_RANGE), which is what `(?!\S)` relies on.
 */
function splitCustom(s: string, llama3: boolean, out: string[]): void {
  const cps: number[] = [];
  const offs: number[] = []; // UTF-16 offset of each codepoint, to slice `s` directly
  for (let i = 0; i < s.length;) {
    const c = s.codePointAt(i)!;
    cps.push(c);
    offs.push(i);
    i += c > 0xffff ? 2 : 1;
  }
  const n = cps.length;
  offs.push(s.length);
  const cpt = (i: number) => (i < n ? cps[i] : -1);
  // 0 = out of range (no flags at all); otherwise F_COMPUTED plus class bits.
  const fl = (i: number) => (i < n ? flagsOf(cps[i]) : 0);
  const lower = (c: number) => (c >= 0x41 && c <= 0x5a ? c + 32 : c);
  let prevEnd = 0;
  const add = (end: number) => {
    const len = end - prevEnd;
    if (len > 0) out.push(s.slice(offs[prevEnd], offs[end]));
    prevEnd = end;
    return len;
  };

  let pos = 0;
  while (pos < n) {
    const c = cps[pos];
    const f = fl(pos);

    // 's|'t|'re|'ve|'m|'ll|'d (case-insensitive for llama3)
    if (c === APOS && pos + 1 < n) {
      const c1 = llama3 ? lower(cpt(pos + 1)) : cpt(pos + 1);
      if (c1 === 0x73 || c1 === 0x74 || c1 === 0x6d || c1 === 0x64) {
        pos += add(pos + 2);
        continue;
      }
      if (pos + 2 < n) {
        const c2 = llama3 ? lower(cpt(pos + 2)) : cpt(pos + 2);
        if (
          (c1 === 0x72 && c2 === 0x65) || (c1 === 0x76 && c2 === 0x65) ||
          (c1 === 0x6c && c2 === 0x6c)
        ) {
          pos += add(pos + 3);
          continue;
        }
      }
    }

    if (llama3) {
      // [^\r\n\p{L}\p{N}]?\p{L}+
      if (!(c === CR || c === LF || (f & F_NUMBER))) {
        if ((f & F_LETTER) || (fl(pos + 1) & F_LETTER)) {
          pos++;
          while (fl(pos) & F_LETTER) pos++;
          add(pos);
          continue;
        }
      }
      // \p{N}{1,3}
      if (f & F_NUMBER) {
        let ini = pos;
        while (fl(pos) & F_NUMBER) {
          if (++pos - ini >= 3) {
            add(pos);
            ini = pos;
          }
        }
        add(pos);
        continue;
      }
      // <space>?[^\s\p{L}\p{N}]+[\r\n]*  (note: llama.cpp tests `f`, not `f2`, for in-range)
      let f2 = c === SPACE ? fl(pos + 1) : f;
      if (!(f2 & (F_WS | F_LETTER | F_NUMBER)) && f) {
        pos += c === SPACE ? 1 : 0;
        while (!(f2 & (F_WS | F_LETTER | F_NUMBER)) && f2) f2 = fl(++pos);
        let c2 = cpt(pos);
        while (c2 === CR || c2 === LF) c2 = cpt(++pos);
        add(pos);
        continue;
      }
      let nws = 0;
      let lastEndRN = 0;
      while (fl(pos + nws) & F_WS) {
        const c2 = cpt(pos + nws);
        if (c2 === CR || c2 === LF) lastEndRN = pos + nws + 1;
        nws++;
      }
      // \s*[\r\n]+
      if (lastEndRN > 0) {
        pos = lastEndRN;
        add(pos);
        continue;
      }
      // \s+(?!\S)
      if (nws > 1 && pos + nws < n) {
        pos += nws - 1;
        add(pos);
        continue;
      }
      if (nws > 0) {
        pos += nws;
        add(pos);
        continue;
      }
      add(++pos);
      continue;
    }

    // gpt2: <space>?\p{L}+ | <space>?\p{N}+ | <space>?[^\s\p{L}\p{N}]+
    let f2 = c === SPACE ? fl(pos + 1) : f;
    if (f2 & F_LETTER) {
      pos += c === SPACE ? 1 : 0;
      while (f2 & F_LETTER) f2 = fl(++pos);
      add(pos);
      continue;
    }
    if (f2 & F_NUMBER) {
      pos += c === SPACE ? 1 : 0;
      while (f2 & F_NUMBER) f2 = fl(++pos);
      add(pos);
      continue;
    }
    if (!(f2 & (F_WS | F_LETTER | F_NUMBER)) && f2) {
      pos += c === SPACE ? 1 : 0;
      while (!(f2 & (F_WS | F_LETTER | F_NUMBER)) && f2) f2 = fl(++pos);
      add(pos);
      continue;
    }
    let nws = 0;
    while (fl(pos + nws) & F_WS) nws++;
    // \s+(?!\S)
    if (nws > 1 && pos + nws < n) {
      pos += nws - 1;
      add(pos);
      continue;
    }
    if (nws > 0) {
      pos += nws;
      add(pos);
      continue;
    }
    add(++pos);
  }
}
