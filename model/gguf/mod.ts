/**
 * GGUF files: read the header, metadata and tensor index of a model without loading its tensors,
 * read tensor bytes lazily by range, and write GGUF files (for tests and benchmarks).
 *
 * @example
 * ```ts
 * import { openGGUF } from "./mod.ts";
 * const f = await openGGUF("models/stories260K.gguf");
 * console.log(f.architecture, f.metadata.number("llama.context_length"), f.tensors.length);
 * const emb = await f.readTensor("token_embd.weight");
 * f.close();
 * ```
 *
 * @module
 */

export { GGUFError } from "./errors.ts";
export { type ByteSource, FileSource, MemorySource } from "./source.ts";
export {
  DEFAULT_ALIGNMENT,
  GGUFFile,
  GGUFMetadata,
  MAX_DIMS,
  openGGUF,
  parseGGUF,
  readGGUF,
  valueTypeName,
} from "./reader.ts";
export {
  type EncodedHeader,
  encodeGGUFHeader,
  ggufArray,
  type GGUFHeaderSpec,
  type GGUFTensorHeader,
  type GGUFTensorInput,
  type GGUFWriteSpec,
  meta,
  writeGGUF,
  writeGGUFFile,
} from "./writer.ts";
export {
  type GGUFArray,
  type GGUFMetadataEntry,
  type GGUFTensorInfo,
  type GGUFValue,
  GGUFValueType,
} from "./types.ts";
