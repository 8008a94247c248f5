/** Mixture-of-experts routing: ggml's softmax, top-k in descending order, renormalised weights. */
import { routeTokens, softmaxGgml } from "../../model/moe.ts";
import { assert, assertEquals } from "../support/assert.ts";

Deno.test("softmaxGgml: within float rounding of the exact softmax, full groups and tail", () => {
  for (const n of [4, 7, 128]) {
    const row = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 1.7) * 6);
    const exact = Array.from(row, (x) => Math.exp(x));
    const sum = exact.reduce((a, b) => a + b, 0);
    softmaxGgml(row);
    for (let i = 0; i < n; i++) {
      const want = exact[i] / sum;
      assert(Math.abs(row[i] - want) <= 4e-7 * Math.max(want, 1e-3), `n=${n} p[${i}]`);
    }
  }
});

Deno.test("routeTokens: the k most probable experts, weights = their probabilities / sum", () => {
  const X = 6;
  const logits = Float32Array.from([
    ...[0.1, 2.0, -1.0, 1.5, 0.0, 3.0], // token 0: experts 5, 1, 3
    ...[5.0, -2.0, 4.0, 0.0, 4.5, -1.0], // token 1: experts 0, 4, 2
  ]);
  const { experts, weights } = routeTokens(logits, 2, X, 3);
  assertEquals(Array.from(experts), [5, 1, 3, 0, 4, 2]);
  for (let t = 0; t < 2; t++) {
    const p = logits.slice(t * X, (t + 1) * X);
    softmaxGgml(p);
    const picked = Array.from(experts.subarray(t * 3, t * 3 + 3), (e) => p[e]);
    const s = Math.fround(picked.reduce((a, b) => a + b, 0));
    for (let j = 0; j < 3; j++) {
      assert(weights[t * 3 + j] === Math.fround(picked[j] / s), `token ${t} slot ${j}`);
    }
    const total = weights.subarray(t * 3, t * 3 + 3).reduce((a, b) => a + b, 0);
    assert(Math.abs(total - 1) < 1e-6, `weights of token ${t} sum to ${total}`);
  }
});

Deno.test("routeTokens: one expert used gets weight 1", () => {
  const { experts, weights } = routeTokens(Float32Array.from([1, 9, 3, 2]), 1, 4, 1);
  assertEquals([experts[0], weights[0]], [1, 1]);
});
