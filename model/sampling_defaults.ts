/**
 * The one set of sampling defaults every way of generating uses (`llmctl generate`, `llmctl
 * chat`, the demo, the agent's Generate and its OpenAI API when a field is left out, the tail
 * stage): llama.cpp's, so a request behaves the same whichever door it came in by.
 *
 * @module
 */
import type { SamplerParams } from "./sampler.ts";

/** The numeric sampling settings that have defaults (the seed has none: unset is random). */
export type DefaultedSettings = Required<
  Pick<
    SamplerParams,
    | "temperature"
    | "topK"
    | "topP"
    | "minP"
    | "repeatPenalty"
    | "repeatLastN"
    | "frequencyPenalty"
    | "presencePenalty"
  >
>;

/** Sampling defaults: llama.cpp's (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05, no penalties). */
export const SAMPLING_DEFAULTS: Readonly<DefaultedSettings> = Object.freeze({
  temperature: 0.8,
  topK: 40,
  topP: 0.95,
  minP: 0.05,
  repeatPenalty: 1,
  repeatLastN: 64,
  frequencyPenalty: 0,
  presencePenalty: 0,
});

/** `params` with every unset field taken from {@link SAMPLING_DEFAULTS} (the seed stays as given). */
export function withSamplingDefaults<T extends SamplerParams>(params: T): T & DefaultedSettings {
  const out = { ...params } as unknown as Record<string, unknown>;
  for (const [k, v] of Object.entries(SAMPLING_DEFAULTS)) out[k] ??= v;
  return out as unknown as T & DefaultedSettings;
}
