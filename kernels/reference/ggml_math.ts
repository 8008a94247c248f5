/**
 * ggml's vectorised exp for x86 SSE2 (`ggml_v_expf` in ggml-cpu/vec.h, no FMA), replayed in
 * float32 with `Math.fround`.
 *
 * Why: llama.cpp's baseline x86-64 CPU build (the "x64" variant our goldens come from) computes
 * softmax and SiLU through this polynomial, not libm's expf, for every full group of 4 lanes.
 * Using it makes our logits match the goldens bit for bit instead of to ~1e-7, which matters on
 * prompts where a tiny difference flips an activation quantization step (see fixtures README).
 */

const fr = Math.fround;
const F = new Float32Array(1);
const U = new Uint32Array(F.buffer);

function bits(f: number): number {
  F[0] = f;
  return U[0];
}

function fromBits(b: number): number {
  U[0] = b >>> 0;
  return F[0];
}

const R = 12582912; // 0x1.8p23
const LOG2E = 0x1715476 * 2 ** -24; // 0x1.715476p+0
const LN2_HI = 0x162e4 * 2 ** -17; // 0x1.62e4p-1
const LN2_LO = 0x17f7d1c * 2 ** -44; // 0x1.7f7d1cp-20
const C0 = 0x10e4020 * 2 ** -31; // 0x1.0e4020p-7
const C1 = 0x1573e2e * 2 ** -29; // 0x1.573e2ep-5
const C2 = 0x1555e66 * 2 ** -27; // 0x1.555e66p-3
const C3 = 0x1fffdb6 * 2 ** -26; // 0x1.fffdb6p-2
const C4 = 0x1ffffec * 2 ** -25; // 0x1.ffffecp-1

/** One lane of ggml_v_expf (SSE2, separate multiply and add). */
export function expfGgml(x: number): number {
  x = fr(x);
  const z = fr(fr(x * LOG2E) + R);
  const n = fr(z - R);
  const b = fr(fr(x - fr(n * LN2_HI)) - fr(n * LN2_LO));
  const e = (bits(z) << 23) >>> 0;
  const k = fromBits((e + 0x3f800000) >>> 0);
  const u = fr(b * b);
  const j = fr(
    fr(fr(fr(fr(fr(C0 * b) + C1) * u) + fr(fr(C2 * b) + C3)) * u) + fr(C4 * b),
  );
  const an = Math.abs(n);
  if (!(an > 126)) return fr(fr(k * j) + k);
  const g = n <= 0 ? 0x82000000 : 0;
  const s1 = fromBits((g + 0x7f000000) >>> 0);
  if (an > 192) return fr(s1 * s1);
  const s2 = fromBits((e - g) >>> 0);
  return fr(fr(fr(s2 * j) + s2) * s1);
}
