/**
 * Token sampling: greedy, temperature, top-k, top-p, min-p, repetition / frequency / presence
 * penalties, with a seeded RNG so the same seed gives the same output.
 *
 * The chain follows llama.cpp's default order: penalties → top-k → top-p → min-p → temperature →
 * draw. Temperature 0 (or below) is greedy: argmax of the penalised logits, ties to the lower id.
 *
 * A `json` constraint (model/constrain) masks, after the penalties, every token that cannot
 * continue a valid JSON value, and once the value is complete every token but end-of-generation
 * ones: wherever a Sampler is built from the settings, the output is held to the shape.
 */
import type { TopCandidates } from "../kernels/backend.ts";
import { logSumExp, rowCandidates, topIds } from "../kernels/candidates.ts";
import { JsonConstraint, JsonConstraintError, type JsonConstraintSpec } from "./constrain/json.ts";
import { type OutputConstraint, ReasoningGate } from "./constrain/after_reasoning.ts";

/** Sampler settings; every field is optional and defaults to llama.cpp's defaults. */
export interface SamplerParams {
  /** 0 = greedy. Default 0.8. */
  temperature?: number;
  /** Keep the k most likely tokens; 0 disables. Default 40. */
  topK?: number;
  /** Keep the smallest set whose probability mass reaches p; 1 disables. Default 0.95. */
  topP?: number;
  /** Drop tokens below minP × the top probability; 0 disables. Default 0.05. */
  minP?: number;
  /** Divide positive / multiply negative logits of recent tokens; 1 disables. Default 1. */
  repeatPenalty?: number;
  /** How many recent tokens the penalties look at. Default 64. */
  repeatLastN?: number;
  /** Subtract frequencyPenalty × count of each recent token. Default 0. */
  frequencyPenalty?: number;
  /** Subtract presencePenalty once from each recent token. Default 0. */
  presencePenalty?: number;
  /** RNG seed; the same seed and inputs give the same tokens. Default: random. */
  seed?: number;
  /**
   * Compute each token's log-probability (default true). False skips the softmax sum over the
   * vocabulary it needs (~0.26 ms a token at 32K ids on a CPU; sampling itself reads only the
   * candidates): the token's logprob is then NaN, unless the backend computed the sum anyway
   * (WebGPU's candidates, greedy lookahead). Log-probabilities of alternatives (topN) are always
   * computed.
   */
  logprob?: boolean;
  /**
   * Added to the logits of these token ids before anything else (OpenAI's logit_bias, llama.cpp's
   * logit-bias sampler at the head of its chain): −100 all but bans a token, +100 all but forces
   * it. Ids past the row are ignored. Default none.
   */
  logitBias?: Readonly<Record<number, number>>;
}

/**
 * What a pick needs from a logit row's candidates (Sampler.candidateRequest): the `k` best ids
 * outside `exclude` (the penalised ids, merged back by the sampler), and the softmax sum only
 * where log-probabilities are wanted (`sum`, default true).
 */
export interface CandidateRequest {
  k: number;
  exclude: Int32Array;
  sum?: boolean;
}

/** Sampler settings with an optional constraint: what a Sampler is built from. */
export interface SamplerSettings extends SamplerParams {
  /**
   * Hold the output to a JSON value (plain data: it survives serialisation and travels with the
   * settings). Build it with model/constrain's jsonConstraintFor; the tokenizer it names must be
   * loaded in the process that samples.
   */
  json?: JsonConstraintSpec;
}

/** One candidate in a top-k report. */
export interface TokenLogprob {
  id: number;
  logit: number;
  logprob: number;
}

/** Thrown when sampler settings are out of range; the message names the setting. */
export class SamplerParamError extends Error {
  override name = "SamplerParamError";
}

/** Most logitBias entries a sampler takes (OpenAI's bound on logit_bias). */
export const MAX_LOGIT_BIAS = 300;

/**
 * A top-p as OpenAI and llama.cpp take it: 0 keeps the most probable token only (the sampler
 * wants a positive mass, and 1e-6 is below any top token's probability for vocabularies under
 * 10^6).
 */
export function topPOf(p: number): number {
  // Below 1e-6 too: 1e-46 is within [0, 1] but a float32 0 at the tail, which refused it (after a
  // stream's 200).
  return p < 1e-6 ? 1e-6 : p;
}

/** Most candidates and penalised ids a backend's topCandidates takes (kernels/backend.ts). */
const MAX_DEVICE_CANDIDATES = 64;
const MAX_DEVICE_EXCLUDE = 256;

/**
 * A seed as the 32 bits the draw mixes: seeds in [0, 2^32) as they are (so their outputs never
 * change), others with their high bits folded in. Before, `seed ^ x` kept only the low 32 bits:
 * 0, 2^32 and 2^60 drew alike, and −1 as 2^32 − 1.
 */
export function seed32(seed: number): number {
  const lo = ((seed % 2 ** 32) + 2 ** 32) % 2 ** 32;
  const hi = Math.floor(seed / 2 ** 32);
  return hi === 0
    ? lo
    : (lo ^ Math.imul(hi | 0, 0x85ebca6b) ^ Math.imul((hi / 2 ** 32) | 0, 0xc2b2ae35)) >>> 0;
}

/** A small, fast, seedable PRNG (mulberry32 over a splitmix32-mixed seed). */
export class Rng {
  private state: number;
  constructor(seed: number) {
    let z = (seed >>> 0) + 0x9e3779b9;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    this.state = (z ^ (z >>> 16)) >>> 0;
  }
  /** Uniform float in [0, 1). */
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

/** Index of the largest value, ties to the lower index (llama.cpp's greedy rule). */
export function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/** log-softmax of every logit, computed in double precision. */
export function logSoftmax(logits: Float32Array): Float64Array {
  const lse = logSumExp(logits);
  const out = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) out[i] = logits[i] - lse;
  return out;
}

/**
 * The `k` highest logits with their log-probabilities, best first (ties to the lower id). Masked
 * tokens (−∞: a JSON constraint's) are no alternative and are left out, so fewer than `k` may
 * come back (OpenAI's top_logprobs hold numbers; −∞ would print as null).
 */
export function topLogprobs(logits: Float32Array, k: number): TokenLogprob[] {
  const lp = logSoftmax(logits);
  const ids = topIds(logits, k).filter((id) => lp[id] > -Infinity);
  return ids.map((id) => ({ id, logit: logits[id], logprob: reportedLogprob(lp[id]) }));
}

/**
 * A log-probability as every path reports it: at float32 precision, the precision of the wire
 * (TokenLogprob.logprob is a protobuf float) and of llama.cpp's. Computed in double and left so,
 * a tail in the head's own process gave other digits than one across the network.
 */
export function reportedLogprob(x: number): number {
  return Math.fround(x);
}

/** Stateful sampler for one sequence: remembers recent tokens for the penalties. */
export class Sampler {
  readonly params: Required<Omit<SamplerParams, "seed" | "logitBias">> & { seed: number };
  /** logitBias as [id, bias] pairs, each bias rounded to float32 (its wire type). */
  readonly #bias: [number, number][];
  /** The seed as the draw mixes it (seed32). */
  #seed32 = 0;
  private readonly recent: number[] = [];
  /** Tokens accepted so far (prompt + generated); keys the random draw. */
  private seen = 0;
  /** The JSON constraint, when the settings have one. */
  readonly constraint: OutputConstraint | undefined;
  /** A token was picked: later accepted tokens are output (when promptTokens is not given). */
  private picked = false;

  constructor(params: SamplerSettings = {}) {
    // Real-valued settings are rounded to float32, their wire type (proto SamplerParams), so a
    // request sampled locally and one sampled by a remote tail stage draw identically.
    const f = Math.fround;
    const p = {
      temperature: f(params.temperature ?? 0.8),
      topK: params.topK ?? 40,
      topP: f(params.topP ?? 0.95),
      minP: f(params.minP ?? 0.05),
      repeatPenalty: f(params.repeatPenalty ?? 1),
      repeatLastN: params.repeatLastN ?? 64,
      frequencyPenalty: f(params.frequencyPenalty ?? 0),
      presencePenalty: f(params.presencePenalty ?? 0),
      seed: params.seed ?? Math.floor(Math.random() * 2 ** 32),
      logprob: params.logprob ?? true,
    };
    const check = (name: string, ok: boolean) => {
      if (!ok) {
        throw new SamplerParamError(`invalid ${name}: ${(p as Record<string, unknown>)[name]}`);
      }
    };
    check("temperature", Number.isFinite(p.temperature));
    check("topK", Number.isInteger(p.topK) && p.topK >= 0);
    check("topP", p.topP > 0 && p.topP <= 1);
    check("minP", p.minP >= 0 && p.minP <= 1);
    check("repeatPenalty", p.repeatPenalty > 0 && Number.isFinite(p.repeatPenalty));
    check("repeatLastN", Number.isInteger(p.repeatLastN) && p.repeatLastN >= 0);
    check("frequencyPenalty", Number.isFinite(p.frequencyPenalty));
    check("presencePenalty", Number.isFinite(p.presencePenalty));
    check("seed", Number.isSafeInteger(p.seed));
    this.#bias = Object.entries(params.logitBias ?? {}).map(([k, v]) => [Number(k), f(v)]);
    if (this.#bias.length > MAX_LOGIT_BIAS) {
      throw new SamplerParamError(`logitBias holds ${this.#bias.length} entries (at most 300)`);
    }
    for (const [id, b] of this.#bias) {
      if (!Number.isInteger(id) || id < 0 || !Number.isFinite(b)) {
        throw new SamplerParamError(`invalid logitBias: ${id} → ${b}`);
      }
    }
    this.params = p;
    this.#seed32 = seed32(p.seed);
    if (params.json) {
      try {
        const json = new JsonConstraint(params.json);
        this.constraint = params.json.reasoning
          ? new ReasoningGate(json, params.json.reasoning)
          : json;
      } catch (e) {
        throw new SamplerParamError(`invalid json: ${(e as Error).message}`);
      }
    }
  }

  /** Remember tokens that count for the penalties (the prompt, then each sampled token). */
  accept(ids: Iterable<number>): void {
    const c = this.constraint;
    const prompt = c?.spec.promptTokens;
    for (const id of ids) {
      // The constraint reads only the output: tokens past the prompt.
      if (c && (prompt === undefined ? this.picked : this.seen >= prompt)) c.accept(id);
      this.recent.push(id);
      this.seen++;
    }
    const keep = this.params.repeatLastN;
    if (this.recent.length > keep) this.recent.splice(0, this.recent.length - keep);
  }

  /** Pick the next token from `logits` (not modified) and remember it. */
  sample(logits: Float32Array): number {
    const id = this.pick(logits);
    this.accept([id]);
    return id;
  }

  /** Pick the next token without remembering it (the caller accepts it with the next input). */
  pick(logits: Float32Array): number {
    this.picked = true;
    return this.choose(this.penalised(logits));
  }

  /** The logits after repetition/frequency/presence penalties, as the choice sees them. */
  penalisedLogits(logits: Float32Array): Float32Array {
    return this.penalised(logits);
  }

  private penalised(logits: Float32Array): Float32Array {
    const adjusted = this.adjustments();
    if (adjusted.size === 0 && !this.constraint) return logits;
    const out = new Float32Array(logits);
    for (const [id, a] of adjusted) {
      if (id < 0 || id >= out.length) continue;
      out[id] = this.adjust(out[id], a);
    }
    if (this.constraint) this.mask(out);
    return out;
  }

  /** -Infinity for every token the constraint does not allow next. */
  private mask(logits: Float32Array): void {
    const m = this.constraint!.mask();
    const n = Math.min(logits.length, this.constraint!.vocabulary.size);
    let allowed = 0;
    for (let i = 0; i < n; i++) {
      if (m[i >> 3] & (1 << (i & 7))) allowed++;
      else logits[i] = -Infinity;
    }
    // Rows wider than the vocabulary (padded output weights) name no token.
    logits.fill(-Infinity, n);
    if (allowed === 0) {
      throw new JsonConstraintError(
        this.constraint!.complete
          ? "the JSON value is complete but the vocabulary has no end-of-generation token"
          : "no token of the vocabulary can continue the JSON output",
      );
    }
  }

  private choose(logits: Float32Array): number {
    const p = this.params;
    if (p.temperature <= 0) return argmax(logits);
    // Candidates sorted by logit, truncated by top-k (llama.cpp sorts the same way).
    const k = p.topK > 0 ? Math.min(p.topK, logits.length) : logits.length;
    const ids = topIds(logits, k);
    return this.draw(ids, ids.map((id) => logits[id]));
  }

  /** Top-p, min-p, temperature and the seeded draw over candidates sorted best first. */
  private draw(ids: number[], logits: number[]): number {
    const p = this.params;
    // Probabilities before temperature drive top-p and min-p, as in llama.cpp's default chain.
    const max = logits[0];
    let probs = logits.map((v) => Math.exp(v - max));
    let sum = probs.reduce((a, b) => a + b, 0);
    let keep = ids.length;
    if (p.topP < 1) {
      let cum = 0;
      for (let i = 0; i < ids.length; i++) {
        cum += probs[i] / sum;
        if (cum >= p.topP) {
          keep = i + 1;
          break;
        }
      }
    }
    if (p.minP > 0) {
      const threshold = p.minP * (probs[0] / sum);
      let m = 1;
      while (m < keep && probs[m] / sum >= threshold) m++;
      keep = m;
    }
    const kept = ids.slice(0, keep);
    probs = logits.slice(0, keep).map((v) => Math.exp((v - max) / p.temperature));
    sum = probs.reduce((a, b) => a + b, 0);
    // Mix the position into the seed so draws are independent of earlier draws (see file doc).
    let r = new Rng((this.#seed32 ^ Math.imul(this.seen + 1, 0x9e3779b1)) >>> 0).next() * sum;
    for (let i = 0; i < kept.length; i++) {
      r -= probs[i];
      if (r < 0) return kept[i];
    }
    // Rounding left r ≥ 0: the last candidate that can be drawn (masked ones have probability 0).
    let last = kept.length - 1;
    while (last > 0 && !(probs[last] > 0)) last--;
    return kept[last];
  }

  /**
   * True when every pick is the argmax of the raw logits: greedy, no penalty, no constraint —
   * so a backend may pick several tokens in a row on its own (LlamaStage.decodeGreedy).
   */
  get isPlainGreedy(): boolean {
    const p = this.params;
    return p.temperature <= 0 && !this.constraint && p.repeatPenalty === 1 &&
      p.frequencyPenalty === 0 && p.presencePenalty === 0 && this.#bias.length === 0;
  }

  /** Whether a pick computes log-probabilities: the token's own (SamplerParams.logprob) or topN. */
  wantsLogprobs(topN = 0): boolean {
    return this.params.logprob || topN > 0;
  }

  /**
   * What the next pick needs from a backend's {@link TopCandidates} (`k` candidates, penalised
   * ids excluded) when `topN` log-probabilities are also wanted; null when only the whole logit
   * row will do (top-k off or above 64 with temperature, more than 256 penalised ids).
   */
  candidateRequest(topN = 0): CandidateRequest | null {
    const p = this.params;
    // A constraint may allow none of a row's best tokens: it needs the whole row.
    if (this.constraint) return null;
    const k = Math.max(p.temperature <= 0 ? 1 : p.topK, topN);
    if ((p.temperature > 0 && p.topK === 0) || k > MAX_DEVICE_CANDIDATES) return null;
    const exclude = Int32Array.from(this.adjustments().keys());
    // The softmax sum only for log-probabilities (SamplerParams.logprob, topN): the draw reads
    // the candidates alone.
    return exclude.length > MAX_DEVICE_EXCLUDE
      ? null
      : { k, exclude, sum: this.wantsLogprobs(topN) };
  }

  /**
   * The token pick() would choose from the whole row, chosen from candidates made for
   * {@link candidateRequest}: the excluded (penalised) ids are penalised here exactly as on the
   * host and merged in, and `topN` log-probabilities come with it. Does not remember the token.
   */
  pickCandidates(c: TopCandidates, topN = 0): { id: number; logprob: number; top: TokenLogprob[] } {
    const p = this.params;
    if (this.constraint) {
      throw new SamplerParamError("a json constraint samples from the whole row, not candidates");
    }
    this.picked = true;
    const adjusted = this.adjustments();
    const ids = Array.from(c.ids);
    const vals = Array.from(c.values);
    let max = c.max;
    let i = 0;
    for (const [id, a] of adjusted) {
      const v = this.adjust(c.excluded[i++], a);
      max = Math.max(max, v);
      ids.push(id);
      vals.push(v);
    }
    // Best first, ties to the lower id: topIds' order over the penalised row.
    const order = ids.map((_, j) => j).sort((a, b) => vals[b] - vals[a] || ids[a] - ids[b]);
    const sIds = order.map((j) => ids[j]);
    const sVals = order.map((j) => vals[j]);
    // log Σ e^v over the penalised row: the device's sum rescaled, plus the penalised values.
    let sum = c.sumExp * Math.exp(c.max - max);
    for (let j = c.ids.length; j < ids.length; j++) sum += Math.exp(vals[j] - max);
    const lse = max + Math.log(sum);
    const k = p.temperature <= 0 ? 1 : Math.min(p.topK, sIds.length);
    const id = p.temperature <= 0 ? sIds[0] : this.draw(sIds.slice(0, k), sVals.slice(0, k));
    const at = sIds.indexOf(id);
    const top = sIds.slice(0, topN).map((t, j) => ({
      id: t,
      logit: sVals[j],
      logprob: reportedLogprob(sVals[j] - lse),
    }));
    return { id, logprob: reportedLogprob(sVals[at] - lse), top };
  }

  /**
   * The ids whose logits the settings change, with how: their count among the recent tokens
   * (when a penalty is on) and their bias. In a fixed order, which candidateRequest's `exclude`
   * and pickCandidates' merge share.
   */
  private adjustments(): Map<number, { count: number; bias: number }> {
    const out = new Map<number, { count: number; bias: number }>();
    for (const [id, count] of this.penaltyCounts()) out.set(id, { count, bias: 0 });
    for (const [id, bias] of this.#bias) {
      const a = out.get(id);
      if (a) a.bias = bias;
      else out.set(id, { count: 0, bias });
    }
    return out;
  }

  /** One logit with its bias (first, as llama.cpp's chain) and then its penalties. */
  private adjust(logit: number, a: { count: number; bias: number }): number {
    const v = a.bias === 0 ? logit : Math.fround(logit + a.bias);
    return a.count > 0 ? this.penalise(v, a.count) : v;
  }

  /** How often each recent token occurred, when any penalty is on (empty otherwise). */
  private penaltyCounts(): Map<number, number> {
    const p = this.params;
    const counts = new Map<number, number>();
    const active = p.repeatPenalty !== 1 || p.frequencyPenalty !== 0 || p.presencePenalty !== 0;
    if (active) { for (const id of this.recent) counts.set(id, (counts.get(id) ?? 0) + 1); }
    return counts;
  }

  /** One logit after the penalties, rounded to float32 as the penalised row stores it. */
  private penalise(logit: number, count: number): number {
    const p = this.params;
    let v = logit;
    if (p.repeatPenalty !== 1) v = v <= 0 ? v * p.repeatPenalty : v / p.repeatPenalty;
    v -= count * p.frequencyPenalty + p.presencePenalty;
    return Math.fround(v);
  }
}

/**
 * The candidates Backend.topCandidates would return for `row`, computed on the host: the `k`
 * largest values outside `exclude` (ties to the lower id), the excluded values, and the softmax
 * sum outside `exclude` (NaN unless `want.sum`, default true). Null when `want` is null.
 */
export function hostCandidates(
  row: Float32Array,
  want: CandidateRequest | null,
): TopCandidates | null {
  return want ? rowCandidates(row, want.k, want.exclude, want.sum ?? true) : null;
}
