/**
 * A byte-level BPE vocabulary that shows a pre-tokenizer's splits in the ids: every byte substring
 * of the given texts, up to `maxBytes` long, is a token, with a merge for each way of cutting it in
 * two. Inside one pre-token any two neighbouring symbols then merge as long as they fit in
 * `maxBytes`, so each pre-token of up to `maxBytes` bytes comes out as one token, and two adjacent
 * output tokens of at most `maxBytes` bytes together must lie in different pre-tokens.
 *
 * Run as a script, it writes that vocabulary as a GGUF llama.cpp loads (the metadata of
 * ggml-vocab-qwen2.gguf, whose tokenizer.* keys are replaced):
 *
 *   deno run -A tests/model/tokenizer/pretoken_vocab.ts PRE OUT.gguf CASES.json MAX_BYTES
 */
import { type GGUFValue, GGUFValueType } from "../../../model/gguf/mod.ts";
import { BYTE_TO_CHAR, utf8 } from "../../../model/tokenizer/unicode.ts";

/** `tokenizer.*` metadata of the vocabulary for `cases` (token 0 is a control <|endoftext|>). */
export function pretokenVocab(
  pre: string,
  cases: readonly string[],
  maxBytes: number,
): Map<string, GGUFValue> {
  const tokens = ["<|endoftext|>", ...BYTE_TO_CHAR];
  const seen = new Set(tokens);
  const merges: string[] = [];
  for (const text of cases) {
    const chars = [...utf8(text)].map((b) => BYTE_TO_CHAR[b]);
    for (let len = 2; len <= maxBytes; len++) {
      for (let i = 0; i + len <= chars.length; i++) {
        const s = chars.slice(i, i + len);
        const tok = s.join("");
        if (seen.has(tok)) continue;
        seen.add(tok);
        tokens.push(tok);
        for (let k = 1; k < len; k++) {
          merges.push(`${s.slice(0, k).join("")} ${s.slice(k).join("")}`);
        }
      }
    }
  }
  const types = new Int32Array(tokens.length).fill(1);
  types[0] = 3;
  return new Map<string, GGUFValue>([
    ["tokenizer.ggml.model", "gpt2"],
    ["tokenizer.ggml.pre", pre],
    ["tokenizer.ggml.tokens", { itemType: GGUFValueType.STRING, values: tokens }],
    ["tokenizer.ggml.token_type", { itemType: GGUFValueType.INT32, values: types }],
    ["tokenizer.ggml.merges", { itemType: GGUFValueType.STRING, values: merges }],
    ["tokenizer.ggml.bos_token_id", 0],
    ["tokenizer.ggml.eos_token_id", 0],
    ["tokenizer.ggml.add_bos_token", false],
  ]);
}

if (import.meta.main) {
  const { editedGGUF } = await import("../../support/gguf_edit.ts");
  const { FIXTURES } = await import("../../support/paths.ts");
  const [pre, out, casesPath, maxBytes] = Deno.args;
  const md = pretokenVocab(pre, JSON.parse(await Deno.readTextFile(casesPath)), Number(maxBytes));
  const typeOf = (v: GGUFValue) =>
    typeof v === "string"
      ? GGUFValueType.STRING
      : typeof v === "boolean"
      ? GGUFValueType.BOOL
      : typeof v === "number"
      ? GGUFValueType.UINT32
      : GGUFValueType.ARRAY;
  const path = await editedGGUF(`${FIXTURES}/vocab/ggml-vocab-qwen2.gguf`, {
    metadata: (m) => [
      ...m.filter((e) => !e.key.startsWith("tokenizer.")),
      ...[...md].map(([key, value]) => ({ key, type: typeOf(value), value })),
    ],
  });
  await Deno.rename(path, out);
  console.log(
    `${out}: ${(md.get("tokenizer.ggml.tokens") as { values: string[] }).values.length} tokens`,
  );
}
