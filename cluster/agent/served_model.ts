/**
 * The model an agent serves: its file index (no tensors yet), tokenizer, chat template and the
 * memory footprint placement plans with.
 *
 * @module
 */
import { openModelFile } from "../../model/engine.ts";
import type { GGUFFile } from "../../model/gguf/mod.ts";
import { configFromFile, type LlamaConfig } from "../../model/config.ts";
import { type Tokenizer, tokenizerFromMetadata } from "../../model/tokenizer/mod.ts";
import { ChatTemplate } from "../../model/chat/mod.ts";
import { footprintFromIndex, type ModelFootprint } from "../placement/mod.ts";
import { ModelId } from "../model_id.ts";

/** The model an agent serves: its file index, tokenizer and footprint. */
export interface ServedModel {
  id: ModelId;
  file: GGUFFile;
  tokenizer: Tokenizer;
  /** Renders chat messages (the GGUF's template, or a plain transcript). */
  chat: ChatTemplate;
  nLayers: number;
  contextLength: number;
  footprint: ModelFootprint;
}

/**
 * Memory a model needs per layer on an agent: weights plus a KV reservation for a few concurrent
 * sessions of `contextSize` positions (more sessions are admission control's job).
 */
export function agentFootprint(
  file: GGUFFile,
  contextSize: number,
  maxSessions: number,
  config: LlamaConfig = configFromFile(file),
): ModelFootprint {
  const ctx = Math.min(contextSize, config.contextLength);
  const kvPerLayer = 2 * ctx * config.nKVHeads * config.headDim * 4 * Math.min(maxSessions, 4);
  return footprintFromIndex(file, config.nLayers, kvPerLayer);
}

/** What an agent needs to serve an opened model file: tokenizer, chat template, footprint. */
export function servedModel(
  id: ModelId,
  file: GGUFFile,
  contextSize: number,
  maxSessions: number,
): ServedModel {
  const config = configFromFile(file);
  const tokenizer = tokenizerFromMetadata(file.metadata);
  return {
    id,
    file,
    tokenizer,
    chat: ChatTemplate.fromMetadata(file.metadata, tokenizer),
    nLayers: config.nLayers,
    contextLength: config.contextLength,
    footprint: agentFootprint(file, contextSize, maxSessions, config),
  };
}

/** Open a model file and read its index (not its tensors), tokenizer and footprint. */
export async function loadModelIndex(
  path: string,
  contextSize: number,
  maxSessions: number,
): Promise<ServedModel> {
  const file = await openModelFile(path);
  try {
    return servedModel(ModelId.of(path, file.fileSize), file, contextSize, maxSessions);
  } catch (e) {
    file.close();
    throw e;
  }
}
