/**
 * Shared setup of the WebGPU tests: one adapter probe, skip (with the reason printed) when there
 * is no adapter, and comparison helpers against the reference backend.
 */
import type { Backend, Buf } from "../../../kernels/backend.ts";
import { GGMLType, quantizeRow } from "../../../kernels/quant/mod.ts";
import { probeAdapter } from "../../../kernels/webgpu/mod.ts";
import { randomFloats } from "../quant/gguf_helper.ts";
import { assert } from "../../support/assert.ts";

export { randomFloats };

/** The probe of this machine's adapter; `ignore` is true (and printed why) when there is none. */
export const PROBE = await probeAdapter();
export const ignore = !PROBE.available;
if (ignore) {
  console.log(`WebGPU tests skipped: ${PROBE.reason}`);
}

/** A weight of `type` and shape [cols, rows] from seeded random floats, on both backends. */
export function randomWeight(
  backends: Backend[],
  name: string,
  type: GGMLType,
  shape: number[],
  seed: number,
  scale = 1,
) {
  const n = shape.reduce((a, b) => a * b, 1);
  const x = randomFloats(n, seed, scale);
  const data = quantizeRow(type, x, n);
  return backends.map((be) => be.upload({ name, type, shape, data }));
}

/** A buffer holding `x`. */
export function bufOf(be: Backend, x: Float32Array): Buf {
  const b = be.buffer(x.length);
  be.write(b, x);
  return b;
}

/** Largest |a − b| / max(1, |b|). */
export function maxRelErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < b.length; i++) {
    const e = Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i]));
    if (!(e <= m)) m = Number.isNaN(e) ? Infinity : e;
  }
  return m;
}

/** Assert that `got` matches `want` elementwise within `tol` (relative above 1, absolute below). */
export function assertClose(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: number,
  what: string,
): void {
  assert(got.length === want.length, `${what}: length ${got.length} vs ${want.length}`);
  for (let i = 0; i < want.length; i++) {
    const e = Math.abs(got[i] - want[i]) / Math.max(1, Math.abs(want[i]));
    assert(e <= tol, `${what}[${i}]: ${got[i]} vs reference ${want[i]} (tolerance ${tol})`);
  }
}
