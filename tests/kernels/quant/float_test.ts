import { assert, assertEquals } from "../../support/assert.ts";
import {
  bf16ToF32,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  quantizeRowBF16,
  quantizeRowF16,
} from "../../../kernels/quant/mod.ts";
import { rng } from "./gguf_helper.ts";

const F = new Float32Array(1);
const U = new Uint32Array(F.buffer);
const bits = (f: number) => ((F[0] = f), U[0]);
const fromBits = (b: number) => ((U[0] = b >>> 0), F[0]);

/** Independent f32 → f16 (plain integer rounding, nearest even), to cross-check ggml's trick. */
function naiveF16(f: number): number {
  const x = bits(f);
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | (mant ? 0x7e00 : 0x7c00);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;
  return sign | h;
}

Deno.test("f16: every one of the 65536 values decodes and re-encodes to itself", () => {
  for (let h = 0; h < 65536; h++) {
    const v = f16ToF32(h);
    if (Number.isNaN(v)) {
      // JS numbers do not keep a NaN's sign or payload; ggml's quiet NaN is 0x7E00.
      assertEquals(f32ToF16(v) & 0x7fff, 0x7e00, `NaN ${h.toString(16)}`);
    } else {
      assertEquals(f32ToF16(v), h, `h=${h.toString(16)} v=${v}`);
    }
  }
  assertEquals(f16ToF32(0x3c00), 1);
  assertEquals(f16ToF32(0xc000), -2);
  assertEquals(f16ToF32(0x7bff), 65504);
  assertEquals(f16ToF32(0x0001), 2 ** -24);
  assertEquals(f16ToF32(0x7c00), Infinity);
  assertEquals(Object.is(f16ToF32(0x8000), -0), true);
});

Deno.test("f16: midpoints round to even, overflow to inf, tiny to zero; matches a naive rounder", () => {
  // Every midpoint between adjacent positive finite f16 values (incl. subnormals) and just beside.
  for (let h = 0; h < 0x7bff; h++) {
    const a = f16ToF32(h);
    const b = f16ToF32(h + 1);
    const mid = (a + b) / 2; // exact in f32
    const even = h % 2 === 0 ? h : h + 1;
    assertEquals(f32ToF16(mid), even, `mid ${h}`);
    assertEquals(f32ToF16(-mid), even | 0x8000, `-mid ${h}`);
    assertEquals(f32ToF16(fromBits(bits(mid) + 1)), h + 1);
    assertEquals(f32ToF16(fromBits(bits(mid) - 1)), h);
  }
  assertEquals(f32ToF16(65520), 0x7c00); // halfway to the next binade rounds up to inf
  assertEquals(f32ToF16(65519), 0x7bff);
  assertEquals(f32ToF16(1e10), 0x7c00);
  assertEquals(f32ToF16(-Infinity), 0xfc00);
  assertEquals(f32ToF16(2 ** -26), 0); // below half the smallest subnormal
  assertEquals(f32ToF16(2 ** -25), 0); // exactly half: ties to even (0)
  assertEquals(f32ToF16(fromBits(bits(2 ** -25) + 1)), 1);
  const r = rng(3);
  for (let i = 0; i < 200000; i++) {
    const f = fromBits((r() * 4294967296) >>> 0);
    if (Number.isNaN(f)) continue;
    assertEquals(f32ToF16(f), naiveF16(f), `${f}`);
  }
});

Deno.test("bf16: round to nearest even on the top 16 bits, NaN stays NaN (quiet)", () => {
  assertEquals(f32ToBf16(1), 0x3f80);
  assertEquals(bf16ToF32(0x3f80), 1);
  // 1 + 2^-8 is exactly halfway between bf16 1 and 1 + 2^-7: ties to even (1).
  assertEquals(f32ToBf16(1 + 2 ** -8), 0x3f80);
  // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: ties to even (up).
  assertEquals(f32ToBf16(1 + 3 * 2 ** -8), 0x3f82);
  assertEquals(f32ToBf16(fromBits(0x3f808001)), 0x3f81); // just above halfway rounds up
  assertEquals(f32ToBf16(-2.5), 0xc020);
  assertEquals(f32ToBf16(Infinity), 0x7f80);
  assertEquals(f32ToBf16(fromBits(0x7f7fffff)), 0x7f80); // max float rounds to inf, like ggml
  const nan = f32ToBf16(fromBits(0x7f800001));
  assert(Number.isNaN(bf16ToF32(nan)) && (nan & 0x40) !== 0, `${nan.toString(16)}`);
  for (let h = 0; h < 65536; h++) {
    const v = bf16ToF32(h);
    if (!Number.isNaN(v)) assertEquals(f32ToBf16(v), h);
  }
});

Deno.test("row conversions write little-endian f16 / bf16", () => {
  const x = new Float32Array([1, -2, 0.5, 65504]);
  assertEquals([...quantizeRowF16(x, 4)], [0x00, 0x3c, 0x00, 0xc0, 0x00, 0x38, 0xff, 0x7b]);
  assertEquals([...quantizeRowBF16(x, 2)], [0x80, 0x3f, 0x00, 0xc0]);
});
