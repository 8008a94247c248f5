/** A scripted TextGenerator for the HTTP API's tests: tokens "x" at a pace. */
import type { GenerationParams, TextGenerator } from "../../cluster/api/mod.ts";

/** A generator whose tokens come every `gapMs`, after `delayMs`; `accept`: it says it took them. */
export function pacedGenerator(
  opts: { tokens: number; gapMs: number; delayMs?: number; accept?: boolean },
): TextGenerator {
  return {
    models: () => [{ id: "fake.gguf", created: 1, contextLength: 64 }],
    health: () => ({ status: "ok" }),
    async *generate(p: GenerationParams, signal: AbortSignal, onAccepted?: () => void) {
      if (opts.accept) onAccepted?.();
      await new Promise((r) => setTimeout(r, opts.delayMs ?? 0));
      for (let i = 0; i < (p.maxTokens ?? opts.tokens) && !signal.aborted; i++) {
        if (i) await new Promise((r) => setTimeout(r, opts.gapMs));
        yield { kind: "token", text: "x", token: { tokenId: 1, text: "x", logprob: -1 }, top: [] };
      }
      yield {
        kind: "done",
        text: "",
        finishReason: "length",
        promptTokens: 1,
        completionTokens: 1,
      };
    },
  };
}
