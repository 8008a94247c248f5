/**
 * The `tokenizer.ggml.pre` table: for each pre-tokenizer name llama.cpp knows and we support,
 * its split steps and the vocabulary flags llama.cpp sets with it (llama_vocab::impl::load and
 * llm_tokenizer_bpe's constructor).
 */
import {
  categoryClass,
  CPT_LETTER,
  CPT_NUMBER,
  CPT_PUNCTUATION,
  type SplitStep,
  WS_CLASS,
} from "./unicode.ts";

/** Settings that come with a pre-tokenizer name. */
export interface PreTokenizer {
  /** Canonical llama.cpp pre type this name maps to. */
  readonly type: string;
  readonly steps: readonly SplitStep[];
  /** A whole word found in the vocabulary is emitted without merges (Llama 3). */
  readonly ignoreMerges: boolean;
  /** Detokenizer's clean_up_tokenization_spaces. */
  readonly cleanSpaces: boolean;
  /** Forces add_bos on (overridable by tokenizer.ggml.add_bos_token). */
  readonly addBos?: boolean;
  /** Clears the default BOS id (chatglm). */
  readonly noBos?: boolean;
}

const WS = `[${WS_CLASS}]`;
const NOT_WS = `[^${WS_CLASS}]`;
// \p{L}, \p{N}, \p{P} as llama.cpp's table has them (class bodies), not as the JS engine does.
const L = categoryClass(CPT_LETTER);
const N = categoryClass(CPT_NUMBER);
const P = categoryClass(CPT_PUNCTUATION);
const CONTRACTIONS = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";

// std::regex in llama.cpp runs on "collapsed" text where every non-ASCII White_Space char is
// \v and every other non-ASCII codepoint is a byte naming its category in llama.cpp's table;
// spelling the whitespace and category classes out gives JS the same \s, \S, \p{L}, etc.
const rx = (src: string) => new RegExp(src, "gu");

const GPT2: SplitStep = { kind: "gpt2" };
const LLAMA3: SplitStep = { kind: "llama3" };
const QWEN2: SplitStep = {
  kind: "regex",
  re: rx(
    `${CONTRACTIONS}|[^\\r\\n${L}${N}]?[${L}]+|[${N}]| ?[^${WS_CLASS}${L}${N}]+[\\r\\n]*|` +
      `${WS}*[\\r\\n]+|${WS}+(?!${NOT_WS})|${WS}+`,
  ),
};
// GPT-4o's tokenizer.json regex as llama.cpp 80fb11a runs it (llama-vocab.cpp, case
// LLAMA_VOCAB_PRE_TYPE_GPT4O): its [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}] / [\p{Ll}\p{Lm}\p{Lo}\p{M}] are
// rewritten as "a letter that is not a-z" / "a letter that is not A-Z" and (?i:'s|…) as
// [sS]-style classes. So every non-ASCII letter counts as both upper and lower case, only ASCII
// case splits a word ("HelloWorld" → Hello|World), and combining marks are not part of words
// (U+0301 after "cafe" is a pre-token of its own): that is what llama.cpp does, not the intent.
const UPPERISH = `(?:(?=[${L}])[^a-z])`;
const LOWERISH = `(?:(?=[${L}])[^A-Z])`;
const GPT4O: SplitStep = {
  kind: "regex",
  re: rx(
    `[^\\r\\n${L}${N}]?${UPPERISH}*${LOWERISH}+${CONTRACTIONS}?|` +
      `[^\\r\\n${L}${N}]?${UPPERISH}+${LOWERISH}*${CONTRACTIONS}?|` +
      `[${N}]{1,3}| ?[^${WS_CLASS}${L}${N}]+[\\r\\n/]*|${WS}*[\\r\\n]+|${WS}+(?!${NOT_WS})|${WS}+`,
  ),
};
const DIGIT: SplitStep = { kind: "regex", re: rx(`[${N}]`) };
const DEFAULT_STEPS: readonly SplitStep[] = [
  { kind: "regex", re: rx(`[${P}$+<=>^~|]+`) },
  GPT2,
  { kind: "regex", re: rx(`[${N}]+`) },
  { kind: "regex", re: rx("[0-9][0-9][0-9]") },
];

const llama3 = (cleanSpaces = true, extra: Partial<PreTokenizer> = {}): PreTokenizer => ({
  type: "llama3",
  steps: [LLAMA3],
  ignoreMerges: true,
  cleanSpaces,
  addBos: true,
  ...extra,
});
const gpt2 = (cleanSpaces = true): PreTokenizer => ({
  type: "gpt2",
  steps: [GPT2],
  ignoreMerges: false,
  cleanSpaces,
});
const qwen2 = (cleanSpaces = false): PreTokenizer => ({
  type: "qwen2",
  steps: [QWEN2],
  ignoreMerges: false,
  cleanSpaces,
});
const gpt4o = (): PreTokenizer => ({
  type: "gpt4o",
  steps: [GPT4O],
  ignoreMerges: false,
  cleanSpaces: false,
});
const starcoder = (cleanSpaces = true): PreTokenizer => ({
  type: "starcoder",
  steps: [DIGIT, GPT2],
  ignoreMerges: false,
  cleanSpaces,
});

/** The pre-tokenizer used when `tokenizer.ggml.pre` is absent or "default". */
export const DEFAULT_PRE: PreTokenizer = {
  type: "default",
  steps: DEFAULT_STEPS,
  ignoreMerges: false,
  cleanSpaces: true,
};

/** Every supported `tokenizer.ggml.pre` value, with llama.cpp's flags for it. */
export const PRE_TOKENIZERS: ReadonlyMap<string, PreTokenizer> = new Map<string, PreTokenizer>([
  ["default", DEFAULT_PRE],
  ...["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"]
    .map((n) => [n, llama3()] as [string, PreTokenizer]),
  ["dbrx", { ...llama3(), ignoreMerges: false, addBos: undefined }],
  ["smaug-bpe", { ...llama3(), ignoreMerges: false, addBos: undefined }],
  ["chatglm-bpe", { ...llama3(), ignoreMerges: false, addBos: undefined, noBos: true }],
  ["glm4", { ...llama3(), ignoreMerges: false, addBos: undefined, noBos: true }],
  ...[
    "gpt-2",
    "phi-2",
    "jina-es",
    "jina-de",
    "gigachat",
    "jina-v2-es",
    "jina-v2-de",
    "a.x-4.0",
    "mellum",
    "mpt",
    "olmo",
    "jais",
    "exaone4",
  ].map((n) => [n, gpt2()] as [string, PreTokenizer]),
  ["trillion", gpt2(false)],
  ["granite-docling", gpt2(false)],
  ...["qwen2", "deepseek-r1-qwen", "kormo", "stablelm2", "hunyuan"]
    .map((n) => [n, qwen2(n === "stablelm2" ? true : false)] as [string, PreTokenizer]),
  ["megrez", qwen2(true)],
  // llama.cpp: LLAMA_VOCAB_PRE_TYPE_GPT4O with clean_spaces = false (Phi-4 mini, Llama 4, ...).
  ...["gpt-4o", "llama4", "kanana2", "talkie"].map((n) => [n, gpt4o()] as [string, PreTokenizer]),
  ["starcoder", starcoder()],
  ["refact", starcoder()],
  ["codeshell", starcoder()],
  ["exaone", starcoder()],
  ["minerva-7b", starcoder()],
  ["command-r", starcoder(false)],
  ["smollm", starcoder(false)],
]);
