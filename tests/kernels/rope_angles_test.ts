import { assertEquals, assertThrows } from "../support/assert.ts";
import { ropeAngles } from "../../kernels/rope_angles.ts";
import { cosfGlibc, sinfGlibc } from "../../kernels/reference/libm.ts";

const fr = Math.fround;

/** ggml_rope_cache_init's angles for one position, computed directly. */
function direct(pos: number, ropeDim: number, base: number, freqScale: number): number[] {
  const scale = fr(Math.pow(fr(base), fr(-2 / ropeDim)));
  const out: number[] = [];
  let theta = fr(pos);
  for (let i = 0; i < ropeDim / 2; i++) {
    const th = fr(fr(freqScale) * theta);
    out.push(cosfGlibc(th), sinfGlibc(th));
    theta = fr(theta * scale);
  }
  return out;
}

Deno.test("ropeAngles: ggml's θ sequence through glibc's cosf/sinf, kept or not", () => {
  const p = { ropeDim: 16, freqBase: 10000, freqScale: 0.5 };
  // Out of order, repeated, past the first growth, beyond the kept range and negative.
  const positions = Int32Array.from([5, 0, 300, 5, 1 << 20, 70000, -3]);
  const got = ropeAngles(positions, p);
  assertEquals(got.length, positions.length * 16);
  positions.forEach((pos, t) => {
    assertEquals(Array.from(got.subarray(t * 16, t * 16 + 16)), direct(pos, 16, 10000, 0.5));
  });
  // Kept angles are the same on the next call, written at an offset.
  const out = new Float32Array(3 + 16);
  ropeAngles(Int32Array.of(300), p, out, 3);
  assertEquals(Array.from(out.subarray(3)), direct(300, 16, 10000, 0.5));
  // Another configuration has its own table.
  const q = ropeAngles(Int32Array.of(300), { ropeDim: 16, freqBase: 500000, freqScale: 1 });
  assertEquals(Array.from(q), direct(300, 16, 500000, 1));
  assertThrows(() => ropeAngles(Int32Array.of(1, 2), p, new Float32Array(20)), RangeError);
});
