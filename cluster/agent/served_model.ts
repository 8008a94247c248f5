/**
 * The model an agent serves: its file index (no tensors yet), tokenizer and chat template (built
 * when first used), and the memory footprint placement plans with.
 *
 * @module
 */
import { openModelFile } from "../../model/engine.ts";
import type { GGUFFile } from "../../model/gguf/mod.ts";
import { checkVocabulary, configFromFile, type LlamaConfig } from "../../model/config.ts";
import { type Tokenizer, tokenizerFromMetadata } from "../../model/tokenizer/mod.ts";
import { ChatTemplate } from "../../model/chat/mod.ts";
import { footprintFromIndex, type ModelFootprint } from "../placement/mod.ts";
import { modelFingerprint, ModelId } from "../model_id.ts";
import type { KvReserve, Member } from "../gossip/mod.ts";
import { kvBytesPerLayer, reservedSessions } from "./kv_budget.ts";

/** The model an agent serves: its file index, tokenizer and footprint. */
export interface ServedModel {
  id: ModelId;
  file: GGUFFile;
  tokenizer: Tokenizer;
  /** Renders chat messages (the GGUF's template, or a plain transcript). */
  chat: ChatTemplate;
  nLayers: number;
  contextLength: number;
  /** The footprint with this agent's own KV reservation. */
  footprint: ModelFootprint;
  /** The footprint with a KV reservation of `kv` (the cluster's: agreedKvReserve). */
  footprintFor(kv: KvReserve): ModelFootprint;
}

/**
 * The KV reservation a cluster plans with: the largest context and session count any of
 * `members` announces, and `own`. Each agent reserving by its own settings would make its own
 * plan: with tight budgets, agents started with other `--context-size` or `--max-sessions`
 * planned other ranges and epochs, leaving layers unhosted or hosted twice. The largest is the
 * safe choice: no stage is planned into less memory than its agent reserves.
 */
export function agreedKvReserve(members: readonly Member[], own: KvReserve): KvReserve {
  let { context, sessions } = own;
  for (const m of members) {
    const kv = m.meta?.kvReserve;
    if (!kv) continue;
    context = Math.max(context, kv.context);
    sessions = Math.max(sessions, kv.sessions);
  }
  return { context, sessions };
}

/**
 * Memory a model needs per layer on an agent: weights plus a KV reservation for a few concurrent
 * sessions of `contextSize` positions (kv_budget.ts: at least one; a stage admits more while
 * their caches fit in what its budget leaves).
 */
export function agentFootprint(
  file: GGUFFile,
  contextSize: number,
  maxSessions: number,
  config: LlamaConfig = configFromFile(file),
): ModelFootprint {
  const ctx = Math.min(contextSize, config.contextLength);
  const kvPerLayer = kvBytesPerLayer(config, ctx) * reservedSessions(maxSessions);
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
  let last: { key: string; fp: ModelFootprint } | undefined;
  return {
    id,
    file,
    get tokenizer() {
      if (!tokenizer) {
        const t = tokenizerFromMetadata(file.metadata);
        checkVocabulary(config, t.vocabSize);
        tokenizer = t;
      }
      return tokenizer;
    },
    get chat() {
      return chat ??= ChatTemplate.fromMetadata(file.metadata, this.tokenizer);
    },
    nLayers: config.nLayers,
    contextLength: config.contextLength,
    footprint: agentFootprint(file, contextSize, maxSessions, config),
    footprintFor(kv) {
      const key = `${kv.context}/${kv.sessions}`;
      if (last?.key !== key) {
        last = { key, fp: agentFootprint(file, kv.context, kv.sessions, config) };
      }
      return last.fp;
    },
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
    const id = ModelId.of(path, file.fileSize, await modelFingerprint(file));
    const served = servedModel(id, file, contextSize, maxSessions);
    // An agent started on a file usually heads requests: build the tokenizer now, so a file whose
    // vocabulary cannot be read fails at start rather than at its first request.
    void served.chat;
    return served;
  } catch (e) {
    file.close();
    throw e;
  }
}
