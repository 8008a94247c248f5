/**
 * Between the API's GenerationParams/GenerationEvent and InferenceService.Generate's protobuf
 * messages, so the HTTP layer and the RPC handler run the same generation core in the agent.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import {
  FinishReason,
  type GenerateRequest,
  GenerateRequestSchema,
  type GenerateResponse,
} from "../../proto/mod.ts";
import type { GenerationEvent, GenerationParams } from "./generator.ts";

/** The Generate request for `p`. */
export function toGenerateRequest(p: GenerationParams): GenerateRequest {
  return create(GenerateRequestSchema, {
    model: p.model,
    prompt: p.prompt ?? "",
    messages: p.messages ?? [],
    maxTokens: p.maxTokens ?? 0,
    stop: p.stop ?? [],
    sampler: {
      temperature: p.temperature,
      topP: p.topP,
      topK: p.topK,
      minP: p.minP,
      repeatPenalty: p.repeatPenalty,
      presencePenalty: p.presencePenalty,
      frequencyPenalty: p.frequencyPenalty,
      seed: p.seed,
      topLogprobs: p.topLogprobs ?? 0,
    },
  });
}

/** Turn Generate's messages into API events; `tokenText` names a token by its piece. */
export async function* toGenerationEvents(
  stream: AsyncIterable<GenerateResponse>,
  tokenText: (id: number) => string,
): AsyncIterable<GenerationEvent> {
  for await (const m of stream) {
    if (m.finishReason === FinishReason.UNSPECIFIED) {
      yield {
        kind: "token",
        text: m.text,
        token: { tokenId: m.tokenId, text: tokenText(m.tokenId), logprob: m.logprob },
        top: m.topLogprobs.map((t) => ({
          tokenId: t.tokenId,
          text: tokenText(t.tokenId),
          logprob: t.logprob,
        })),
      };
      continue;
    }
    yield {
      kind: "done",
      text: m.text,
      finishReason: m.finishReason === FinishReason.LENGTH
        ? "length"
        : m.finishReason === FinishReason.CANCELLED
        ? "cancelled"
        : "stop",
      promptTokens: m.usage?.promptTokens ?? 0,
      completionTokens: m.usage?.completionTokens ?? 0,
    };
  }
}
