/** ggml's f16 GELU table: close to the exact tanh GELU, f16-rounded, and exact at its edges. */
import { gegluGgml, geluTable } from "../../kernels/gelu.ts";
import { f16ToF32, f32ToF16 } from "../../kernels/quant/float.ts";
import { assert } from "../support/assert.ts";

function geluExact(x: number): number {
  return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * x * (1 + 0.044715 * x * x)));
}

Deno.test("gelu table: every finite f16 input within f16 rounding of the exact tanh GELU", () => {
  const t = geluTable();
  for (let h = 0; h < 65536; h++) {
    const x = f16ToF32(h);
    if (!Number.isFinite(x) || Math.abs(x) >= 10) continue;
    const want = geluExact(x);
    // every entry is an f16 value: f16 rounding (2^-11 relative, subnormals 2^-25) on top of
    // ggml's f32 formula, whose 1 + tanh cancels for negative x (an f32 ulp of 1, times x / 2)
    assert(f16ToF32(f32ToF16(t[h])) === t[h], `entry ${h} is not an f16 value`);
    const err = Math.abs(t[h] - want);
    const bound = Math.abs(want) * 2 ** -10 + Math.abs(x) * 2 ** -23 + 2 ** -24;
    assert(err <= bound, `gelu(${x}) = ${t[h]}, exact ${want}`);
  }
});

Deno.test("geglu: the input is rounded to f16, ±10 are the edges, the product is f32", () => {
  // 1.0001 rounds to the f16 1.0, so it reads gelu(1)
  assert(gegluGgml(1.0001, 1) === geluTable()[f32ToF16(1)], "input rounded to f16");
  assert(gegluGgml(-10, 5) === 0 && gegluGgml(-20, 5) === 0, "zero at and below −10");
  assert(gegluGgml(10, 3) === 30 && gegluGgml(12.5, 0.1) === Math.fround(12.5 * 0.1), "x · g");
  assert(gegluGgml(2, 3) === Math.fround(geluTable()[f32ToF16(2)] * 3), "table · g");
});
