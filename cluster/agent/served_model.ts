/**
 * The model an agent serves: its file index (no tensors yet), tokenizer and chat template (built
 * when first used), and the memory footprint placement plans with.
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

/**
 * What an agent needs to serve an opened model file: footprint now, tokenizer and chat template
 * on first use. Only an agent that heads a request tokenizes, and a 128K-token vocabulary's
 * tokenizer holds ~40 MB of RSS that a stage-only agent would carry for nothing.
 */
export function servedModel(
  id: ModelId,
  file: GGUFFile,
  contextSize: number,
  maxSessions: number,
): ServedModel {
  const config = configFromFile(file);
  let tokenizer: Tokenizer | undefined;
  let chat: ChatTemplate | undefined;
  return {
    id,
    file,
    get tokenizer() {
      return tokenizer ??= tokenizerFromMetadata(file.metadata);
    },
    get chat() {
      return chat ??= ChatTemplate.fromMetadata(file.metadata, this.tokenizer);
    },
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
    const served = servedModel(ModelId.of(path, file.fileSize), file, contextSize, maxSessions);
    // An agent started on a file usually heads requests: build the tokenizer now, so a file whose
    // vocabulary cannot be read fails at start rather than at its first request.
    void served.chat;
    return served;
  } catch (e) {
    file.close();
    throw e;
  }
}
