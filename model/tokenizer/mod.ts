/**
 * Tokenizers of llama.cpp, token for token: SentencePiece-BPE ("llama") and byte-level BPE
 * ("gpt2" with the llama-bpe, qwen2, gpt-2, default… pre-tokenizers), built from GGUF metadata.
 *
 * @example
 * ```ts
 * import { openGGUF } from "../gguf/mod.ts";
 * import { tokenizerFromMetadata } from "./mod.ts";
 * const f = await openGGUF("models/stories260K.gguf");
 * const tok = tokenizerFromMetadata(f.metadata);
 * const ids = tok.encode("Once upon a time"); // [1, 403, 407, 261, 378] (BOS first)
 * const dec = tok.createDecoder();
 * let text = "";
 * for (const id of ids) text += dec.push(id);
 * text += dec.flush();
 * ```
 *
 * @module
 */

export {
  type DecodeOptions,
  type EncodeOptions,
  type MetadataLike,
  type StreamDecoder,
  type StreamDecoderOptions,
  supportedPreTokenizers,
  TokenAttr,
  Tokenizer,
  tokenizerFromMetadata,
} from "./tokenizer.ts";
