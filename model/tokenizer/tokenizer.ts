/**
 * The Tokenizer: a vocabulary loaded from GGUF metadata the way llama.cpp's
 * `llama_vocab::impl::load` does, plus encode (tokenize), decode (detokenize) and streaming
 * decode with llama.cpp's exact rules.
 */
import { type GGUFArray, type GGUFValue, GGUFValueType } from "../gguf/types.ts";
import { bpeTokenizeWord, type BpeVocab } from "./bpe.ts";
import { DEFAULT_PRE, PRE_TOKENIZERS, type PreTokenizer } from "./pretokenizers.ts";
import { hex2, spmTokenize, type SpmVocab } from "./spm.ts";
import { byteEncode, CHAR_TO_BYTE, preTokenize, utf8 } from "./unicode.ts";
import { registerTokenSource } from "../constrain/vocabulary.ts";

/** Anything with GGUF-style `get` — GGUFMetadata, or a Map in tests. */
export interface MetadataLike {
  get(key: string): GGUFValue | undefined;
}

/** Token attribute bits, as llama.h's llama_token_attr. */
export const TokenAttr = {
  UNDEFINED: 0,
  UNKNOWN: 1 << 0,
  UNUSED: 1 << 1,
  NORMAL: 1 << 2,
  CONTROL: 1 << 3,
  USER_DEFINED: 1 << 4,
  BYTE: 1 << 5,
  NORMALIZED: 1 << 6,
  LSTRIP: 1 << 7,
  RSTRIP: 1 << 8,
  SINGLE_WORD: 1 << 9,
} as const;

/** Options of Tokenizer.encode. */
export interface EncodeOptions {
  /** Prepend BOS; default: the vocabulary's add_bos (llama.cpp add_special=true). */
  addBos?: boolean;
  /** Append EOS; default: the vocabulary's add_eos. */
  addEos?: boolean;
  /** Turn the text of control tokens into those tokens; default false (as in the fixtures). */
  parseSpecial?: boolean;
  /**
   * With `parseSpecial`: UTF-16 ranges [start, end) of `text` where control-token text stays
   * text, as without it (a chat's message contents: a user cannot write `<|im_start|>system`
   * into their turn and have it read as a turn of its own). Elsewhere, and for text without
   * control-token text in these ranges, tokens are exactly llama_tokenize's.
   */
  literal?: readonly (readonly [number, number])[];
}

/** Options of Tokenizer.decode (llama_detokenize's flags). */
export interface DecodeOptions {
  /** Drop a leading BOS / trailing EOS when the vocabulary adds them; default false. */
  removeSpecial?: boolean;
  /** Render control/unknown tokens as their text; default false (llama-cli prints nothing). */
  unparseSpecial?: boolean;
  /** clean_up_tokenization_spaces (" ," → ","); default: the vocabulary's setting. */
  cleanSpaces?: boolean;
}

/** Options of Tokenizer.createDecoder. */
export interface StreamDecoderOptions {
  /** Render control/unknown tokens as their text; default false. */
  unparseSpecial?: boolean;
}

/** Streaming detokenizer: holds incomplete UTF-8 sequences across tokens. */
export interface StreamDecoder {
  /** Adds one token; returns the text that is now complete (possibly ""). */
  push(id: number): string;
  /** Ends the stream; leftover partial bytes come out as U+FFFD. */
  flush(): string;
}

const SPM_SPACE = "\u2581";
const ATTR_SPECIAL = TokenAttr.UNKNOWN | TokenAttr.CONTROL;

// Texts llama.cpp recognises as end-of-turn / end-of-generation when metadata does not say.
const EOT_TEXTS = new Set([
  "<|eot_id|>",
  "<|im_end|>",
  "<|end|>",
  "<end_of_turn>",
  "<|endoftext|>",
  "<|end_of_text|>",
  "<EOT>",
  "_<EOT>",
  "[EOT]",
  "<｜end▁of▁sentence｜>",
  "<end_of_utterance>",
]);
// llama.cpp's end-of-generation texts (llama-vocab.cpp, in its order): each is forced to be a
// control token too. Before, </s>, <eos>, <turn|>, <|tool_response>, <|flush|>, <|calls|>,
// DeepSeek's end of sentence and [e~[ were missing: a Qwen vocabulary's </s> (128247) was plain
// text here, so "hi </s> there" tokenized and decoded otherwise than in llama.cpp.
const EOG_TEXTS = new Set([
  "<|eot_id|>",
  "<|im_end|>",
  "<|end|>",
  "<|return|>",
  "<|call|>",
  "<|flush|>",
  "<|calls|>",
  "<end_of_turn>",
  "<|endoftext|>",
  "</s>",
  "<|eom_id|>",
  "<EOT>",
  "_<EOT>",
  "[EOT]",
  "[EOS]",
  "<|end_of_text|>",
  "<end_of_utterance>",
  "<eos>",
  "<turn|>",
  "<|tool_response>",
  "<｜end▁of▁sentence｜>",
  "[e~[",
]);

/**
 * Fill-in-the-middle tokens llama.cpp finds by text when metadata does not name them (forced to
 * be control tokens then); pad, repo and file separator also end a generation.
 */
const FIM_TEXTS = {
  pre: [
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
  ],
  suf: [
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
  ],
  mid: [
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
  ],
  pad: ["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
  rep: ["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"],
  sep: ["<|file_sep|>"],
} as const;

type Model = "llama" | "gpt2";

/** A tokenizer built from GGUF metadata; see `tokenizerFromMetadata`. */
export class Tokenizer {
  /** "llama" (SentencePiece-BPE) or "gpt2" (byte-level BPE). */
  readonly model: Model;
  /** The `tokenizer.ggml.pre` name in effect ("default" for SPM and when absent). */
  readonly pre: string;
  /** Special ids (null when the vocabulary has none). */
  readonly bos: number | null;
  readonly eos: number | null;
  readonly eot: number | null;
  readonly eom: number | null;
  readonly unk: number | null;
  readonly pad: number | null;
  readonly sep: number | null;
  /** Whether llama.cpp adds BOS / EOS to a prompt (add_special). */
  readonly addBos: boolean;
  readonly addEos: boolean;
  /** SPM: a space is put before the text (and removed again when detokenizing). */
  readonly addSpacePrefix: boolean;
  /** Detokenizer default for clean_up_tokenization_spaces. */
  readonly cleanSpaces: boolean;
  /** Non-fatal problems found while loading, worded as llama.cpp warns about them. */
  readonly warnings: readonly string[];

  readonly #tokens: string[];
  readonly #attrs: Uint16Array;
  readonly #tokenToId: Map<string, number>;
  readonly #scores: Float32Array;
  readonly #mergeRanks: Map<string, number>;
  readonly #preTok: PreTokenizer;
  readonly #eog: Set<number>;
  readonly #specialCache: number[];
  readonly #pieces: (Uint8Array | undefined)[];
  readonly #spmVocab: SpmVocab;
  readonly #bpeVocab: BpeVocab;

  /** Use `tokenizerFromMetadata`. */
  constructor(init: {
    model: Model;
    pre: string;
    preTok: PreTokenizer;
    tokens: string[];
    attrs: Uint16Array;
    tokenToId: Map<string, number>;
    scores: Float32Array;
    mergeRanks: Map<string, number>;
    ids: {
      bos: number | null;
      eos: number | null;
      eot: number | null;
      eom: number | null;
      unk: number | null;
      pad: number | null;
      sep: number | null;
    };
    addBos: boolean;
    addEos: boolean;
    addSpacePrefix: boolean;
    cleanSpaces: boolean;
    eog: Set<number>;
    warnings: string[];
  }) {
    this.model = init.model;
    this.pre = init.pre;
    this.#preTok = init.preTok;
    this.#tokens = init.tokens;
    this.#attrs = init.attrs;
    this.#tokenToId = init.tokenToId;
    this.#scores = init.scores;
    this.#mergeRanks = init.mergeRanks;
    this.bos = init.ids.bos;
    this.eos = init.ids.eos;
    this.eot = init.ids.eot;
    this.eom = init.ids.eom;
    this.unk = init.ids.unk;
    this.pad = init.ids.pad;
    this.sep = init.ids.sep;
    this.addBos = init.addBos;
    this.addEos = init.addEos;
    this.addSpacePrefix = init.addSpacePrefix;
    this.cleanSpaces = init.cleanSpaces;
    this.#eog = init.eog;
    this.warnings = init.warnings;
    this.#pieces = new Array(init.tokens.length);
    this.#spmVocab = {
      tokenToId: init.tokenToId,
      scores: init.scores,
      unk: init.ids.unk,
      byteToToken: (b) => this.#byteToToken(b),
    };
    this.#bpeVocab = {
      tokenToId: init.tokenToId,
      mergeRanks: init.mergeRanks,
      ignoreMerges: init.preTok.ignoreMerges,
    };
    // Longest first, so "<|im_end|>" is split out before any shorter token inside it. llama.cpp
    // uses an unstable std::sort; ties (equal lengths) keep id order here.
    this.#specialCache = [];
    for (let id = 0; id < init.tokens.length; id++) {
      if (init.attrs[id] & (TokenAttr.CONTROL | TokenAttr.USER_DEFINED | TokenAttr.UNKNOWN)) {
        this.#specialCache.push(id);
      }
    }
    this.#specialCache.sort((a, b) => init.tokens[b].length - init.tokens[a].length || a - b);
    // A JSON constraint names its vocabulary by fingerprint; the stage that samples (maybe not
    // the head that took the request) finds this tokenizer by it (model/constrain/vocabulary.ts).
    registerTokenSource(this);
  }

  /** Number of tokens in the vocabulary. */
  get vocabSize(): number {
    return this.#tokens.length;
  }

  /** The vocabulary text of a token (e.g. "▁the", "Ġworld", "<|im_end|>"). */
  tokenText(id: number): string {
    this.#check(id);
    return this.#tokens[id];
  }

  /** The id of a vocabulary text, or undefined. */
  tokenId(text: string): number | undefined {
    return this.#tokenToId.get(text);
  }

  /** Attribute bits of a token (see TokenAttr). */
  tokenAttr(id: number): number {
    this.#check(id);
    return this.#attrs[id];
  }

  /** Control tokens (BOS, EOS, chat markers…) are rendered as nothing by default. */
  isControl(id: number): boolean {
    return id >= 0 && id < this.#tokens.length && (this.#attrs[id] & TokenAttr.CONTROL) !== 0;
  }

  /** End of generation: EOS, EOT, EOM and the other end markers llama.cpp recognises. */
  isEog(id: number): boolean {
    return this.#eog.has(id);
  }

  /** All end-of-generation ids, ascending. */
  get eogIds(): number[] {
    return [...this.#eog].sort((a, b) => a - b);
  }

  /** Tokenizes text exactly as llama.cpp's llama_tokenize. */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    const addBos = opts.addBos ?? this.addBos;
    const addEos = opts.addEos ?? this.addEos;
    const out: number[] = [];
    // llama.cpp works on UTF-8 bytes; lone surrogates have no UTF-8 form, so they become U+FFFD
    // exactly as its UTF-8 decoder would treat the replacement bytes.
    const raw = text.toWellFormed();
    const fragments = raw.length > 0
      ? this.#partition(raw, opts.parseSpecial ?? false, opts.literal ?? [])
      : [];
    if (addBos) out.push(this.#need(this.bos, "BOS"));
    if (this.model === "llama") {
      let prevSpecial = true; // the first fragment gets the space prefix
      for (const f of fragments) {
        if (typeof f === "number") {
          out.push(f);
          prevSpecial = true;
          continue;
        }
        const t = (this.addSpacePrefix && prevSpecial ? " " : "") + f;
        spmTokenize(this.#spmVocab, t.replaceAll(" ", SPM_SPACE), out);
        prevSpecial = false;
      }
    } else {
      for (const f of fragments) {
        if (typeof f === "number") {
          out.push(f);
          continue;
        }
        for (const word of preTokenize(f, this.#preTok.steps)) {
          bpeTokenizeWord(this.#bpeVocab, byteEncode(word), out);
        }
      }
    }
    if (addEos) out.push(this.#need(this.eos, "EOS"));
    return out;
  }

  /**
   * Raw bytes of one token as llama_token_to_piece renders it: SPM ▁ → space, `<0xXX>` → the
   * byte, byte-level BPE chars → their bytes; control/unknown tokens give their text only when
   * `special` (default true), else nothing.
   */
  tokenPiece(id: number, special = true): Uint8Array {
    this.#check(id);
    if (!special && (this.#attrs[id] & ATTR_SPECIAL)) return new Uint8Array(0);
    return this.#pieces[id] ??= this.#renderPiece(id);
  }

  /** Detokenizes like llama_detokenize (leading-space removal, clean_spaces) to a string. */
  decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
    return new TextDecoder("utf-8", { ignoreBOM: true }).decode(this.decodeBytes(ids, opts));
  }

  /** decode() without the final UTF-8 → string step. */
  decodeBytes(ids: ArrayLike<number>, opts: DecodeOptions = {}): Uint8Array {
    const removeSpecial = opts.removeSpecial ?? false;
    const unparse = opts.unparseSpecial ?? false;
    const clean = opts.cleanSpaces ?? this.cleanSpaces;
    let from = 0;
    let to = ids.length;
    let removeSpace = this.addSpacePrefix;
    // As llama.cpp: with a removed BOS the following space is kept (it is not "the" prefix).
    if (removeSpecial && this.addBos && to > 0 && ids[0] === this.bos) {
      removeSpace = false;
      from++;
    }
    if (removeSpecial && this.addEos && to > from && ids[to - 1] === this.eos) to--;
    const parts: Uint8Array[] = [];
    let total = 0;
    for (let i = from; i < to; i++) {
      let p = this.tokenPiece(ids[i], unparse);
      if (removeSpace && p.length > 0 && p[0] === 0x20) p = p.subarray(1);
      removeSpace = false;
      parts.push(p);
      total += p.length;
    }
    const text = new Uint8Array(total);
    let at = 0;
    for (const p of parts) {
      text.set(p, at);
      at += p.length;
    }
    return clean ? cleanSpaces(text) : text;
  }

  /**
   * A streaming detokenizer for generation: concatenates token pieces (as llama-cli prints
   * them) and emits only complete UTF-8 characters.
   */
  createDecoder(opts: StreamDecoderOptions = {}): StreamDecoder {
    const unparse = opts.unparseSpecial ?? false;
    // ignoreBOM: a leading U+FEFF is text here, not a byte-order mark to drop.
    const td = new TextDecoder("utf-8", { ignoreBOM: true });
    return {
      push: (id: number) => td.decode(this.tokenPiece(id, unparse), { stream: true }),
      flush: () => td.decode(),
    };
  }

  // --- internals ---

  #byteToToken(b: number): number | undefined {
    return this.#tokenToId.get(`<0x${hex2(b)}>`) ??
      (b < 0x80 ? this.#tokenToId.get(String.fromCharCode(b)) : undefined);
  }

  #check(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.#tokens.length) {
      throw new RangeError(
        `token id ${id} is outside the vocabulary (0..${this.#tokens.length - 1})`,
      );
    }
  }

  #need(id: number | null, what: string): number {
    if (id === null) {
      throw new Error(`cannot add ${what}: the vocabulary has no ${what} token id`);
    }
    return id;
  }

  /**
   * tokenizer_st_partition: split out special tokens; text fragments stay strings. Control
   * tokens (ATTR_SPECIAL) whose text lies across a `literal` range are not split out there.
   */
  #partition(
    text: string,
    parseSpecial: boolean,
    literal: readonly (readonly [number, number])[],
  ): (string | number)[] {
    // Each text fragment with its offset in `text`, to tell whether a match is in a literal range.
    let frags: (Frag | number)[] = [{ s: text, at: 0 }];
    const inLiteral = literalOverlap(literal);
    for (const id of this.#specialCache) {
      const attr = this.#attrs[id];
      // Without parse_special only user-defined tokens are split out (as in HF tokenizers).
      if (!parseSpecial && (attr & ATTR_SPECIAL)) continue;
      const guarded = literal.length > 0 && (attr & ATTR_SPECIAL) !== 0;
      const tok = this.#tokens[id];
      const next: (Frag | number)[] = [];
      for (const frag of frags) {
        if (typeof frag === "number" || !frag.s.includes(tok)) {
          next.push(frag);
          continue;
        }
        const f = frag.s;
        const piece = (from: number, to: number) =>
          next.push({ s: f.slice(from, to), at: frag.at + from });
        let base = 0;
        let from = 0; // where the search goes on (past matches left as text)
        const end = f.length;
        for (;;) {
          let m = f.indexOf(tok, from);
          while (guarded && m >= 0 && inLiteral(frag.at + m, frag.at + m + tok.length)) {
            m = f.indexOf(tok, m + 1);
          }
          if (m < 0 || m >= end) {
            if (base < end) piece(base, end);
            break;
          }
          let leftEnd = m;
          if (attr & TokenAttr.LSTRIP) {
            while (leftEnd > base && isCSpace(f.charCodeAt(leftEnd - 1))) leftEnd--;
          }
          if (leftEnd > base) piece(base, leftEnd);
          next.push(id);
          base = m + tok.length;
          if (attr & TokenAttr.RSTRIP) {
            while (base < end && isCSpace(f.charCodeAt(base))) base++;
          }
          from = base;
          if (base >= end) break;
        }
      }
      frags = next;
    }
    return frags.map((f) => typeof f === "number" ? f : f.s);
  }

  #renderPiece(id: number): Uint8Array {
    const attr = this.#attrs[id];
    const text = this.#tokens[id];
    if (attr & (ATTR_SPECIAL | TokenAttr.USER_DEFINED)) return utf8(text);
    if (attr & TokenAttr.NORMAL) {
      if (this.model === "llama") return utf8(text.replaceAll(SPM_SPACE, " "));
      return decodeByteLevel(text);
    }
    if (attr & TokenAttr.BYTE) return new Uint8Array([parseInt(text.substring(3, 5), 16) & 0xff]);
    return new Uint8Array(0); // unused / undefined tokens render as nothing
  }
}

/** A text fragment of #partition and where it starts in the whole text. */
interface Frag {
  s: string;
  at: number;
}

/** C isspace in the "C" locale, used by llama.cpp for lstrip/rstrip. */
function isCSpace(c: number): boolean {
  return c === 0x20 || (c >= 0x09 && c <= 0x0d);
}

/** llama_decode_text: byte-level chars → bytes; unmapped chars kept visibly, as llama.cpp. */
function decodeByteLevel(text: string): Uint8Array {
  const out: number[] = [];
  for (const ch of text) {
    const b = CHAR_TO_BYTE.get(ch);
    if (b !== undefined) {
      out.push(b);
      continue;
    }
    const hex = [...utf8(ch)].map((x) => x.toString(16).padStart(2, "0")).join("");
    out.push(...utf8(`[UNK_BYTE_0x${hex}${text}]`));
  }
  return new Uint8Array(out);
}

/** The three clean_up_tokenization_spaces passes of llama_vocab::impl::detokenize, on bytes. */
function cleanSpaces(t: Uint8Array): Uint8Array {
  const text = Uint8Array.from(t);
  const SP = 0x20;
  const Q = 0x27;
  // pass 1: " ?", " !", " .", " ," lose the space
  const total1 = text.length;
  let total = total1 ? 1 : 0;
  for (let i = 1; i < total1; i++) {
    const x = text[i];
    if (text[i - 1] === SP && (x === 0x3f || x === 0x21 || x === 0x2e || x === 0x2c)) total--;
    text[total++] = x;
  }
  // pass 2: " ' " loses both spaces
  const total2 = total;
  total = total ? 1 : 0;
  for (let i = 1; i < total2; i++) {
    const x = text[i];
    if (x === Q && i + 1 < total2 && text[i - 1] === SP && text[i + 1] === SP) {
      total--;
      text[++i] = 0;
    }
    text[total++] = x;
  }
  // pass 3: " 's", " 'm", " 're", " 've" lose the space
  const total3 = total;
  total = total ? 1 : 0;
  for (let i = 1; i < total3; i++) {
    const x = text[i];
    if (text[i - 1] === SP && x === Q && i + 1 < total3) {
      const x1 = text[i + 1];
      if (x1 === 0x73 || x1 === 0x6d) total--;
      else if (i + 2 < total3) {
        const x2 = text[i + 2];
        if ((x1 === 0x72 && x2 === 0x65) || (x1 === 0x76 && x2 === 0x65)) total--;
      }
    }
    text[total++] = x;
  }
  return text.subarray(0, total);
}

// --- loading ---

function str(md: MetadataLike, key: string): string | undefined {
  const v = md.get(key);
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw new Error(`GGUF key ${key} should be a string`);
  return v;
}

function bool(md: MetadataLike, key: string): boolean | undefined {
  const v = md.get(key);
  if (v === undefined) return undefined;
  if (typeof v === "boolean") return v;
  if (typeof v === "number") return v !== 0;
  throw new Error(`GGUF key ${key} should be a bool`);
}

function int(md: MetadataLike, key: string): number | undefined {
  const v = md.get(key);
  if (v === undefined) return undefined;
  // A float (NaN, 2.5) was taken as a token id: NaN passed the range checks and fed token 0.
  if (typeof v === "number" && Number.isInteger(v)) return v;
  if (typeof v === "bigint") return Number(v);
  throw new Error(`GGUF key ${key} should be an integer, not ${String(v).slice(0, 40)}`);
}

/** Integer element types of GGUF arrays (token types). */
const INT_ITEMS = new Set([0, 1, 2, 3, 4, 5, 10, 11]);
/** Numeric element types of GGUF arrays (scores). */
const NUM_ITEMS = new Set([...INT_ITEMS, 6, 12]);

/** Refuse an array whose elements are not of the kind `key` holds ("integers", …). */
function itemsOf(a: GGUFArray, key: string, allowed: Set<number>, kind: string): void {
  if (!allowed.has(a.itemType)) {
    throw new Error(
      `GGUF key ${key} should be an array of ${kind}, not of ${
        GGUFValueType[a.itemType] ?? a.itemType
      }`,
    );
  }
}

function arr(md: MetadataLike, key: string): GGUFArray | undefined {
  const v = md.get(key);
  if (v === undefined) return undefined;
  if (typeof v !== "object" || v === null || !("values" in v)) {
    throw new Error(`GGUF key ${key} should be an array`);
  }
  return v;
}

/** Names accepted for `tokenizer.ggml.pre` (byte-level BPE vocabularies). */
export function supportedPreTokenizers(): string[] {
  return [...PRE_TOKENIZERS.keys()];
}

/**
 * Builds a Tokenizer from GGUF metadata (`tokenizer.ggml.*`), with llama.cpp's defaults for
 * absent keys. Throws for tokenizer models other than "llama"/"gpt2" and for unknown `pre`.
 */
export function tokenizerFromMetadata(md: MetadataLike): Tokenizer {
  const warnings: string[] = [];
  const modelName = str(md, "tokenizer.ggml.model");
  if (modelName === undefined) {
    throw new Error("GGUF has no tokenizer.ggml.model: this file carries no vocabulary");
  }
  if (modelName !== "llama" && modelName !== "gpt2") {
    throw new Error(
      `unsupported tokenizer model "${modelName}" (tokenizer.ggml.model); supported: llama, gpt2`,
    );
  }
  const model: Model = modelName;
  let preName = str(md, "tokenizer.ggml.pre");

  // Defaults per model type, as llama_vocab::impl::load.
  let bos: number | null;
  let eos: number | null;
  let unk: number | null;
  let sep: number | null = null;
  let pad: number | null = null;
  let eot: number | null = null;
  let eom: number | null = null;
  let addSpacePrefix: boolean;
  let addBos = false;
  let addEos = false;
  let cleanSpaces: boolean;
  let preTok: PreTokenizer;
  if (model === "llama") {
    bos = 1;
    eos = 2;
    unk = 0;
    addSpacePrefix = true;
    cleanSpaces = false;
    addBos = true;
    preTok = DEFAULT_PRE;
    preName = "default";
  } else {
    bos = 11;
    eos = 11;
    unk = null;
    addSpacePrefix = false;
    if (preName === undefined || preName === "") {
      warnings.push(
        "missing pre-tokenizer type (tokenizer.ggml.pre), using 'default': " +
          "generation quality will be degraded; consider regenerating the model",
      );
      preName = "default";
    }
    const found = PRE_TOKENIZERS.get(preName);
    if (found === undefined) {
      throw new Error(
        `unknown pre-tokenizer type "${preName}" (tokenizer.ggml.pre); supported: ` +
          supportedPreTokenizers().join(", "),
      );
    }
    preTok = found;
    cleanSpaces = found.cleanSpaces;
    if (found.addBos) addBos = true;
    if (found.noBos) bos = null;
  }
  addSpacePrefix = bool(md, "tokenizer.ggml.add_space_prefix") ?? addSpacePrefix;

  const tokArr = arr(md, "tokenizer.ggml.tokens");
  if (tokArr === undefined) throw new Error("cannot find tokenizer vocab (tokenizer.ggml.tokens)");
  if (!Array.isArray(tokArr.values) || typeof (tokArr.values[0] ?? "") !== "string") {
    throw new Error("invalid GGUF type for tokenizer.ggml.tokens: expected an array of strings");
  }
  const tokens = (tokArr.values as string[]).slice();
  const n = tokens.length;

  const scores = new Float32Array(n);
  const scoreArr = arr(md, "tokenizer.ggml.scores");
  if (scoreArr !== undefined) {
    itemsOf(scoreArr, "tokenizer.ggml.scores", NUM_ITEMS, "numbers");
    const v = scoreArr.values as ArrayLike<number>;
    if (v.length < n) {
      throw new Error(`tokenizer.ggml.scores has ${v.length} entries for ${n} tokens`);
    }
    for (let i = 0; i < n; i++) scores[i] = Number(v[i]);
  }
  const attrs = new Uint16Array(n).fill(TokenAttr.NORMAL);
  const typeArr = arr(md, "tokenizer.ggml.token_type");
  if (typeArr !== undefined) {
    // Strings or floats here made every token UNDEFINED, so all output text came out empty.
    itemsOf(typeArr, "tokenizer.ggml.token_type", INT_ITEMS, "integers");
    const v = typeArr.values as ArrayLike<number>;
    if (v.length < n) {
      throw new Error(`tokenizer.ggml.token_type has ${v.length} entries for ${n} tokens`);
    }
    const map = [
      TokenAttr.UNDEFINED,
      TokenAttr.NORMAL,
      TokenAttr.UNKNOWN,
      TokenAttr.CONTROL,
      TokenAttr.USER_DEFINED,
      TokenAttr.UNUSED,
      TokenAttr.BYTE,
    ];
    for (let i = 0; i < n; i++) attrs[i] = map[Number(v[i])] ?? TokenAttr.UNDEFINED;
  }

  const tokenToId = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    if (tokens[i] === "") {
      warnings.push(`empty token at index ${i}`);
      tokens[i] = `[EMPTY_${i}]`;
    }
    const prev = tokenToId.get(tokens[i]);
    if (prev !== undefined) {
      throw new Error(`duplicate token in vocabulary: '${tokens[i]}' has ids ${prev} and ${i}`);
    }
    tokenToId.set(tokens[i], i);
  }

  const mergeRanks = new Map<string, number>();
  if (model === "gpt2") {
    const m = arr(md, "tokenizer.ggml.merges");
    if (m === undefined) throw new Error("cannot find tokenizer merges (tokenizer.ggml.merges)");
    itemsOf(m, "tokenizer.ggml.merges", new Set([GGUFValueType.STRING]), "strings");
    const merges = m.values as string[];
    for (let i = 0; i < merges.length; i++) {
      const w = merges[i];
      // llama.cpp splits at the first space after position 0; the first rank of a pair wins.
      const pos = w.indexOf(" ", 1);
      if (pos < 0) continue;
      if (!mergeRanks.has(w)) mergeRanks.set(w, i);
    }
  }

  // Special ids: defaults outside the vocabulary are disabled; metadata overrides when in range.
  const special = (key: string, dflt: number | null): number | null => {
    let id = dflt;
    if (id !== null && id >= n) {
      warnings.push(`default special token '${key}' = ${id} out of vocab range, disabling`);
      id = null;
    }
    const v = int(md, key);
    if (v === undefined) return id;
    if (v < 0 || v >= n) {
      warnings.push(`bad special token: '${key}' = ${v}, using default id ${id ?? -1}`);
      return id;
    }
    return v;
  };
  bos = special("tokenizer.ggml.bos_token_id", bos);
  eos = special("tokenizer.ggml.eos_token_id", eos);
  eot = special("tokenizer.ggml.eot_token_id", eot);
  eom = special("tokenizer.ggml.eom_token_id", eom);
  unk = special("tokenizer.ggml.unknown_token_id", unk);
  sep = special("tokenizer.ggml.seperator_token_id", sep);
  pad = special("tokenizer.ggml.padding_token_id", pad);

  addBos = bool(md, "tokenizer.ggml.add_bos_token") ?? addBos;
  addEos = bool(md, "tokenizer.ggml.add_eos_token") ?? addEos;
  if (addBos && bos === null) {
    throw new Error(
      "tokenizer.ggml.add_bos_token is true, but tokenizer.ggml.bos_token_id is not set",
    );
  }
  if (addEos && eos === null) {
    throw new Error(
      "tokenizer.ggml.add_eos_token is true, but tokenizer.ggml.eos_token_id is not set",
    );
  }

  // Auto-detected end markers; llama.cpp also forces them to be control tokens.
  // llama.cpp takes the first match in unordered_map order (unspecified); we take the first
  // text of the list that exists, which gives <|eot_id|> for Llama 3 and <|im_end|> for Qwen.
  if (eot === null) {
    for (const t of EOT_TEXTS) {
      const id = tokenToId.get(t);
      if (id !== undefined) {
        eot = id;
        attrs[id] |= TokenAttr.CONTROL;
        break;
      }
    }
  }
  // Fill-in-the-middle tokens: named by metadata, else found by text (and forced to control).
  const fim: Partial<Record<keyof typeof FIM_TEXTS, number>> = {};
  for (const kind of Object.keys(FIM_TEXTS) as (keyof typeof FIM_TEXTS)[]) {
    let id = special(`tokenizer.ggml.fim_${kind}_token_id`, null);
    if (id === null) {
      for (const t of FIM_TEXTS[kind]) {
        const found = tokenToId.get(t);
        if (found !== undefined) {
          id = found;
          attrs[found] |= TokenAttr.CONTROL;
          break;
        }
      }
    }
    if (id !== null) fim[kind] = id;
  }
  const eog = new Set<number>();
  for (const kind of ["pad", "rep", "sep"] as const) {
    if (fim[kind] !== undefined) eog.add(fim[kind]);
  }
  for (let id = 0; id < n; id++) {
    const t = tokens[id];
    if (eom === null && t === "<|eom_id|>") {
      eom = id;
      attrs[id] |= TokenAttr.CONTROL;
    }
    if (EOG_TEXTS.has(t)) {
      eog.add(id);
      attrs[id] |= TokenAttr.CONTROL;
    }
    // gpt-oss: these must always be rendered
    if (t === "<|channel|>" || t === "<|message|>" || t === "<|start|>" || t === "<|constrain|>") {
      attrs[id] = TokenAttr.USER_DEFINED;
    }
  }
  for (const id of [eos, eot, eom]) if (id !== null) eog.add(id);
  // o200k_harmony (<|return|> and <|call|>) and solar-open (<|calls|> and <|flush|>): <|end|> is
  // not an end of generation there. As llama.cpp, by the texts of the ids in the set.
  const idOf = (t: string) => tokenToId.get(t);
  const eogTexts = new Map([...eog].map((id) => [tokens[id], id]));
  const hasCall = eogTexts.has("<|call|>") || eogTexts.has("<|calls|>");
  const endId = eogTexts.get("<|end|>");
  if (
    endId !== undefined && hasCall && (eogTexts.has("<|return|>") || eogTexts.has("<|flush|>"))
  ) {
    eog.delete(endId);
    attrs[endId] = TokenAttr.USER_DEFINED;
  }
  // gemma4 and paddleocr: with <|tool_response> an end of generation, </s> is plain text.
  const sId = eogTexts.get("</s>");
  if (sId !== undefined && eogTexts.has("<|tool_response>")) {
    eog.delete(sId);
    attrs[sId] = TokenAttr.NORMAL;
  }

  // phi-3: special tokens eat the whitespace after them (llama.cpp sets RSTRIP by model name).
  const name = (str(md, "general.name") ?? "").toLowerCase();
  if (name.includes("phi-3") || name.includes("phi3")) {
    for (let id = 0; id < n; id++) {
      if (attrs[id] & (TokenAttr.CONTROL | TokenAttr.USER_DEFINED | TokenAttr.UNKNOWN)) {
        attrs[id] |= TokenAttr.RSTRIP;
      }
    }
    const set = (t: string, on: boolean) => {
      const id = idOf(t);
      if (id === undefined) return;
      attrs[id] = on ? attrs[id] | TokenAttr.RSTRIP : attrs[id] & ~TokenAttr.RSTRIP;
    };
    set("</s>", true);
    for (const t of ["<unk>", "<s>", "<|endoftext|>"]) set(t, false);
  }

  return new Tokenizer({
    model,
    pre: preName,
    preTok,
    tokens,
    attrs,
    tokenToId,
    scores,
    mergeRanks,
    ids: { bos, eos, eot, eom, unk, pad, sep },
    addBos,
    addEos,
    addSpacePrefix,
    cleanSpaces,
    eog,
    warnings,
  });
}

/**
 * Whether [from, to) overlaps one of `ranges`, by binary search over them sorted (a chat of
 * 40 000 turns has as many ranges, tested at every control token's match: a scan of them all
 * per match took 25 s).
 */
export function literalOverlap(
  ranges: readonly (readonly [number, number])[],
): (from: number, to: number) => boolean {
  const sorted = [...ranges].filter(([a, b]) => b > a).sort((x, y) => x[0] - y[0]);
  // ends[i]: the furthest end among ranges 0..i, so overlapping ranges need no merging
  const ends: number[] = [];
  for (const [, b] of sorted) ends.push(Math.max(b, ends.at(-1) ?? -Infinity));
  return (from, to) => {
    // the last range starting before `to`: it, or one before it, overlaps when it reaches past from
    let lo = 0, hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (sorted[mid][0] < to) lo = mid + 1;
      else hi = mid;
    }
    return lo > 0 && ends[lo - 1] > from;
  };
}
