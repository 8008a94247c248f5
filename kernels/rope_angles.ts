/**
 * The cos/sin table of rotary position embedding, as llama.cpp's CPU backend builds it
 * (`ggml_rope_cache_init`, ext_factor 0): θ starts at the position, is multiplied by theta_scale =
 * base^(−2/ropeDim) in float for each pair, and each angle freqScale·θ goes through glibc's `cosf`
 * / `sinf` (`reference/libm.ts`). Every backend rotates with this one table, so they agree with
 * each other and with llama.cpp bit for bit.
 *
 * With frequency factors (`rope_freqs.weight`, Llama 3.1+; LongRoPE's long or short set), pair
 * i's θ is divided by factor i in float before the scale, as `ggml_rope_cache_init` does. With an
 * attention factor ≠ 1 (`rope.scaling.attn_factor`), cos and sin are each multiplied by it in
 * float, as `rope_yarn` does with its mscale when ext_factor is 0.
 *
 * A position's angles never change, so they are computed once per (ropeDim, base, scale,
 * factors, attention factor) and kept: 4·ropeDim bytes per position, against a KV cache of 8·kvDim bytes per layer
 * per position.
 *
 * @module
 */
import type { RopeParams } from "./backend.ts";
import { cosSinfGlibc } from "./reference/libm.ts";

const fr = Math.fround;
/** Positions at or beyond this are computed on every call instead of kept. */
const KEEP_BELOW = 1 << 20;

/** One rope configuration's angle table, grown as positions arrive. */
class AngleTable {
  readonly #half: number;
  readonly #thetaScale: number;
  readonly #freqScale: number;
  readonly #factors?: Float32Array;
  readonly #mscale: number;
  #cs = new Float32Array(0);
  #have = new Uint8Array(0);

  constructor(
    ropeDim: number,
    freqBase: number,
    freqScale: number,
    factors?: Float32Array,
    mscale = 1,
  ) {
    this.#half = ropeDim / 2;
    if (factors && factors.length !== this.#half) {
      throw new RangeError(
        `ropeAngles: ${factors.length} frequency factors for ${this.#half} pairs`,
      );
    }
    this.#factors = factors && Float32Array.from(factors);
    // powf in glibc and a double pow rounded once agree on every base and width in use (one of
    // 3036 base/width pairs tested differs: 40000 at 118); see tests/kernels/reference/libm_test.ts.
    this.#thetaScale = fr(Math.pow(fr(freqBase), fr(-2 / ropeDim)));
    this.#freqScale = fr(freqScale);
    this.#mscale = fr(mscale);
  }

  /** Write position `pos`'s (cos, sin) pairs at `out[at ..]`. */
  write(pos: number, out: Float32Array, at: number): void {
    const n = this.#half * 2;
    if (pos < 0 || pos >= KEEP_BELOW || !Number.isInteger(pos)) {
      this.#compute(pos, out, at);
      return;
    }
    if (pos >= this.#have.length) this.#grow(pos + 1);
    const from = pos * n;
    if (!this.#have[pos]) {
      this.#compute(pos, this.#cs, from);
      this.#have[pos] = 1;
    }
    out.set(this.#cs.subarray(from, from + n), at);
  }

  #grow(atLeast: number): void {
    const cap = Math.min(KEEP_BELOW, Math.max(atLeast, this.#have.length * 2, 256));
    const cs = new Float32Array(cap * this.#half * 2);
    cs.set(this.#cs);
    const have = new Uint8Array(cap);
    have.set(this.#have);
    this.#cs = cs;
    this.#have = have;
  }

  #compute(pos: number, out: Float32Array, at: number): void {
    let theta = fr(pos);
    const ff = this.#factors;
    const m = this.#mscale;
    for (let i = 0; i < this.#half; i++) {
      const th = fr(this.#freqScale * (ff ? fr(theta / ff[i]) : theta));
      cosSinfGlibc(th, out, at + 2 * i);
      if (m !== 1) {
        // float × float, rounded once: the product of two floats is exact in a double.
        out[at + 2 * i] *= m;
        out[at + 2 * i + 1] *= m;
      }
      theta = fr(theta * this.#thetaScale);
    }
  }
}

const tables = new Map<string, AngleTable>();
/** Each factor array's values as a key (computed once per array, not per call). */
const factorKeys = new WeakMap<Float32Array, string>();

/**
 * The (cos, sin) pairs of each row's position: `positions.length × ropeDim/2` pairs, written to
 * `out` (allocated when not given) from `at`. Returns `out`.
 */
export function ropeAngles(
  positions: Int32Array,
  p: Pick<RopeParams, "ropeDim" | "freqBase" | "freqScale" | "freqFactors" | "attnFactor">,
  out?: Float32Array,
  at = 0,
): Float32Array {
  // Factors by value: a stage loaded again reads them into a new array, and the same model must
  // find its table (ropeDim/2 numbers, read once per call only when present).
  let ff = "";
  if (p.freqFactors) {
    ff = factorKeys.get(p.freqFactors) ?? p.freqFactors.join(",");
    factorKeys.set(p.freqFactors, ff);
  }
  const mscale = p.attnFactor ?? 1;
  const key = `${p.ropeDim}/${p.freqBase}/${p.freqScale}/${mscale}/${ff}`;
  let table = tables.get(key);
  if (!table) {
    table = new AngleTable(p.ropeDim, p.freqBase, p.freqScale, p.freqFactors, mscale);
    tables.set(key, table);
  }
  const n = p.ropeDim;
  out ??= new Float32Array(positions.length * n);
  if (out.length < at + positions.length * n) {
    throw new RangeError(`ropeAngles: ${out.length - at} floats for ${positions.length} rows`);
  }
  for (let t = 0; t < positions.length; t++) table.write(positions[t], out, at + t * n);
  return out;
}
