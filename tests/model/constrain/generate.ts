/**
 * The in-process sampling path for constraint tests: a whole-model LlamaStage (reference backend)
 * and a Sampler built from plain settings, as a tail stage builds it.
 */
import { createReferenceBackend } from "../../../kernels/reference/mod.ts";
import { openGGUF } from "../../../model/gguf/mod.ts";
import { LlamaStage } from "../../../model/llama.ts";
import { Sampler, type SamplerSettings } from "../../../model/sampler.ts";
import { type Tokenizer, tokenizerFromMetadata } from "../../../model/tokenizer/mod.ts";

/** A loaded whole model and its tokenizer. */
export interface LocalModel {
  stage: LlamaStage;
  tokenizer: Tokenizer;
  close(): void;
}

/** Load every layer of `path` on the reference backend. */
export async function loadLocalModel(path: string): Promise<LocalModel> {
  const file = await openGGUF(path);
  const tokenizer = tokenizerFromMetadata(file.metadata);
  const stage = await LlamaStage.load(file, createReferenceBackend());
  return {
    stage,
    tokenizer,
    close: () => {
      stage.dispose();
      file.close();
    },
  };
}

/** Generate after `prompt` until an end token or `maxTokens`: the text and why it ended. */
export async function generateLocal(
  m: LocalModel,
  prompt: string | number[],
  maxTokens: number,
  params: SamplerSettings,
): Promise<{ text: string; tokens: number[]; finishReason: "stop" | "length" }> {
  const promptTokens = typeof prompt === "string"
    ? m.tokenizer.encode(prompt, { addBos: m.tokenizer.addBos })
    : prompt;
  const sampler = new Sampler(params);
  const session = m.stage.newSession(Math.min(m.stage.config.contextLength, 512));
  const decoder = m.tokenizer.createDecoder();
  const tokens: number[] = [];
  let text = "";
  try {
    let input = Int32Array.from(promptTokens);
    while (tokens.length < maxTokens) {
      sampler.accept(input);
      const out = await m.stage.forward(session, { tokens: input });
      if (!("logits" in out)) throw new Error("a whole-model stage answers logits");
      const id = sampler.pick(out.logits);
      tokens.push(id);
      if (m.tokenizer.isEog(id)) {
        return { text: text + decoder.flush(), tokens, finishReason: "stop" };
      }
      text += decoder.push(id);
      input = Int32Array.of(id);
    }
    return { text: text + decoder.flush(), tokens, finishReason: "length" };
  } finally {
    m.stage.endSession(session);
  }
}
