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
 *
 * Why our own category table instead of JS `\p{L}`/`\p{N}`: llama.cpp classes codepoints by
 * its generated `unicode-data.cpp` (an older Unicode than the JS engine's, which also changes
 * with each ICU update), so thousands of codepoints (e.g. U+1C89, U+16D70, U+10D40) would split
 * differently. unicode_table.ts holds llama.cpp's table; gen_unicode_table.ts regenerates it.
 */
import { RANGES_FLAGS, WHITESPACE_CPTS } from "./unicode_table.ts";

// llama.cpp's unicode_cpt_flags bits (src/unicode.h): each codepoint has exactly one category,
// plus WHITESPACE for the members of unicode_set_whitespace.
/** Unassigned codepoint (Cn). */
export const CPT_UNDEFINED = 0x0001;
/** `\p{N}`. */
export const CPT_NUMBER = 0x0002;
/** `\p{L}`. */
export const CPT_LETTER = 0x0004;
/** `\p{Z}`. */
export const CPT_SEPARATOR = 0x0008;
/** `\p{M}`. */
export const CPT_ACCENT_MARK = 0x0010;
/** `\p{P}`. */
export const CPT_PUNCTUATION = 0x0020;
/** `\p{S}`. */
export const CPT_SYMBOL = 0x0040;
/** `\p{C}` (assigned). */
export const CPT_CONTROL = 0x0080;
/** `\s`: Unicode White_Space, llama.cpp's `unicode_set_whitespace`. */
export const CPT_WHITESPACE = 0x0100;

const N_RANGES = RANGES_FLAGS.length / 2;
const rangeStart = (i: number) => (i < N_RANGES ? RANGES_FLAGS[2 * i] : 0x110000);

// Filled once at load: a lookup per codepoint is the pre-tokenizers' hot path. UNDEFINED ranges
// (most of the codespace) stay 0 and read back as CPT_UNDEFINED, so loading does not touch
// ~1.4 MB of fresh pages for them.
const FLAGS: Uint16Array = (() => {
  const table = new Uint16Array(0x110000);
  for (let i = 0; i < N_RANGES; i++) {
    const flags = RANGES_FLAGS[2 * i + 1];
    if (flags !== CPT_UNDEFINED) table.fill(flags, rangeStart(i), rangeStart(i + 1));
  }
  for (const cp of WHITESPACE_CPTS) table[cp] |= CPT_WHITESPACE;
  return table;
})();

/** llama.cpp's unicode_cpt_flags_from_cpt: category bit plus CPT_WHITESPACE (never 0). */
export function cptFlags(cp: number): number {
  return FLAGS[cp] || CPT_UNDEFINED;
}

const esc = (cp: number) => `\\u{${cp.toString(16)}}`;

/**
 * Regex character-class body (no brackets) for one llama.cpp category, for `u`-flag regexes.
 * Whitespace codepoints are left out, as llama.cpp's collapsed text turns them all into \v.
 */
export function categoryClass(category: number): string {
  let out = "";
  const add = (lo: number, hi: number) => out += lo === hi ? esc(lo) : `${esc(lo)}-${esc(hi)}`;
  for (let i = 0; i < N_RANGES; i++) {
    if (RANGES_FLAGS[2 * i + 1] !== category) continue;
    let lo = rangeStart(i);
    const hi = rangeStart(i + 1) - 1;
    for (const w of WHITESPACE_CPTS) { // ascending
      if (w > hi) break;
      if (w < lo) continue;
      if (w > lo) add(lo, w - 1);
      lo = w + 1;
    }
    if (lo <= hi) add(lo, hi);
  }
  return out;
}

/** The whitespace set as a regex character-class body (for the std::regex-style pre-tokenizers). */
export const WS_CLASS: string = WHITESPACE_CPTS.map(esc).join("");

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
  // 0 = out of range (llama.cpp's empty unicode_cpt_flags{}); in range, flags are never 0.
  const fl = (i: number) => (i < n ? FLAGS[cps[i]] || CPT_UNDEFINED : 0);
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
      if (!(c === CR || c === LF || (f & CPT_NUMBER))) {
        if ((f & CPT_LETTER) || (fl(pos + 1) & CPT_LETTER)) {
          pos++;
          while (fl(pos) & CPT_LETTER) pos++;
          add(pos);
          continue;
        }
      }
      // \p{N}{1,3}
      if (f & CPT_NUMBER) {
        let ini = pos;
        while (fl(pos) & CPT_NUMBER) {
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
      if (!(f2 & (CPT_WHITESPACE | CPT_LETTER | CPT_NUMBER)) && f) {
        pos += c === SPACE ? 1 : 0;
        while (!(f2 & (CPT_WHITESPACE | CPT_LETTER | CPT_NUMBER)) && f2) f2 = fl(++pos);
        let c2 = cpt(pos);
        while (c2 === CR || c2 === LF) c2 = cpt(++pos);
        add(pos);
        continue;
      }
      let nws = 0;
      let lastEndRN = 0;
      while (fl(pos + nws) & CPT_WHITESPACE) {
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
    if (f2 & CPT_LETTER) {
      pos += c === SPACE ? 1 : 0;
      while (f2 & CPT_LETTER) f2 = fl(++pos);
      add(pos);
      continue;
    }
    if (f2 & CPT_NUMBER) {
      pos += c === SPACE ? 1 : 0;
      while (f2 & CPT_NUMBER) f2 = fl(++pos);
      add(pos);
      continue;
    }
    if (!(f2 & (CPT_WHITESPACE | CPT_LETTER | CPT_NUMBER)) && f2) {
      pos += c === SPACE ? 1 : 0;
      while (!(f2 & (CPT_WHITESPACE | CPT_LETTER | CPT_NUMBER)) && f2) f2 = fl(++pos);
      add(pos);
      continue;
    }
    let nws = 0;
    while (fl(pos + nws) & CPT_WHITESPACE) nws++;
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
