/**
 * The agent as the OpenAI API (cluster/api) sees it: the models it serves, its health, and the
 * head's plain events turned into the API's generation events — no protobuf on the way.
 *
 * @module
 */
import type { GenerationEvent, GenerationParams, TextGenerator } from "../api/mod.ts";
import type { AgentState } from "./state.ts";
import type { HeadService } from "./head_service.ts";
import type { ServedModel } from "./served_model.ts";

/** A token's text, and its raw bytes where its text is not their whole UTF-8. */
type TokenPiece = { text: string; bytes?: Uint8Array };

/** Whether two byte arrays hold the same bytes. */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** The TextGenerator of an agent. */
export function textGenerator(
  s: AgentState,
  head: HeadService,
  health: () => Record<string, unknown>,
): TextGenerator {
  /**
   * Pieces by id, per model: a request's tokens are read with the vocabulary of the model it
   * was admitted on (HeadTokenEvent.model), not of the one served now. A request that finishes
   * after `models deploy` replaced its model decoded its ids with the new vocabulary (an id past
   * its end failed the request as an internal error; after an undeploy there was none).
   */
  const pieces = new WeakMap<ServedModel, Map<number, TokenPiece>>();
  const tokenText = (model: ServedModel, id: number): TokenPiece => {
    let byId = pieces.get(model);
    if (!byId) pieces.set(model, byId = new Map());
    let t = byId.get(id);
    if (t === undefined) {
      const raw = model.tokenizer.tokenPiece(id);
      const text = new TextDecoder().decode(raw);
      const whole = sameBytes(new TextEncoder().encode(text), raw);
      t = whole ? { text } : { text, bytes: raw.slice() };
      byId.set(id, t);
    }
    return t;
  };
  return {
    models: () => {
      const model = s.model;
      if (!model) return [];
      return [{
        id: model.id.name,
        created: s.startedAt,
        contextLength: Math.min(s.config.contextSize, model.contextLength),
        // The names the head takes (ModelId.matches), so the API looks models up as it does.
        matches: (name: string) => model.id.matches(name),
        // How its template writes tool calls: the API plans a request's tools by it.
        toolFormat: model.chat.toolFormat,
        // A thinking template: the API splits reasoning from content.
        thinking: model.chat.thinking,
      }];
    },
    health,
    capacity: () => s.admission.maxActive + s.admission.maxQueued,
    generate: (p, signal, onAccepted) => events(head, p, signal, tokenText, onAccepted),
    // the head binds a JSON shape to the vocabulary and feeds token-id prompts as given
    features: { json: true, promptTokens: true },
  };
}

async function* events(
  head: HeadService,
  p: GenerationParams,
  signal: AbortSignal,
  tokenText: (model: ServedModel, id: number) => TokenPiece,
  onAccepted?: () => void,
): AsyncIterable<GenerationEvent> {
  // The sampling settings, named one by one: whatever the tail samples with must be added here
  // (and to wire.ts's samplingToWire when a remote tail must see it too).
  const sampling = {
    temperature: p.temperature,
    topK: p.topK,
    topP: p.topP,
    minP: p.minP,
    repeatPenalty: p.repeatPenalty,
    presencePenalty: p.presencePenalty,
    frequencyPenalty: p.frequencyPenalty,
    logitBias: p.logitBias,
    // The sampler's RNG takes 32 bits; the API accepts any uint64 and draws with the low bits.
    seed: p.seed === undefined ? undefined : Number(p.seed & 0xffffffffn),
    topLogprobs: p.topLogprobs || undefined,
    ...(p.logprobs === false ? { logprob: false } : {}),
  };
  const { model, prompt, promptTokens, messages, tools, assistantPrefix, maxTokens, stop } = p;
  // What the rendered chat prompt said (the head renders it before its first event).
  let rendered: { reasoningOpen: boolean } | undefined;
  for await (
    const e of head.generate(
      {
        model,
        prompt,
        promptTokens,
        messages,
        tools,
        assistantPrefix,
        chatTemplateKwargs: p.chatTemplateKwargs,
        maxTokens: maxTokens ?? 0,
        stop,
        sampling,
        jsonSchema: p.json,
        jsonAfterReasoning: p.jsonAfterReasoning,
        onAccepted,
        onRendered: (r) => (rendered = r),
      },
      signal,
    )
  ) {
    if (rendered) {
      yield { kind: "prompt", reasoningOpen: rendered.reasoningOpen };
      rendered = undefined;
    }
    if (e.kind === "token") {
      yield {
        kind: "token",
        text: e.text,
        token: { tokenId: e.token.id, ...tokenText(e.model, e.token.id), logprob: e.token.logprob },
        top: e.token.top.map((t) => ({
          tokenId: t.id,
          ...tokenText(e.model, t.id),
          logprob: t.logprob,
        })),
      };
      continue;
    }
    yield {
      kind: "done",
      text: e.text,
      finishReason: e.finishReason === "length"
        ? "length"
        : e.finishReason === "cancelled"
        ? "cancelled"
        : "stop",
      promptTokens: e.promptTokens,
      cachedTokens: e.cachedTokens,
      completionTokens: e.completionTokens,
    };
  }
}
