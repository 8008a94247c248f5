/**
 * Decode attention microbenchmark (a kernel developer's tool, not one of `deno task bench`'s): two
 * builds of the WASM kernels in one process, taking turns, one thread, best of 5, on the 110M
 * model's shape (12 layers, 12 heads of 64, f32 cache): one query row at the end of a context of
 * 1025 and 4001 positions (or those of a second argument), each of the 12 layers' caches read in
 * turn as a model's decode reads them (from memory, not cache). Each build gets the cache in the
 * layout it keeps: head by head where it has `storeHeads` (since 2026-12-06), else rows of every
 * head. Prints ms per token (12 layers) and whether the outputs are identical:
 *
 * ```sh
 * git archive <commit> | tar -x -C /tmp/base && deno run -A /tmp/base/kernels/wasm/build.ts
 * deno run -A bench/tools/attention_decode.ts /tmp/base/kernels/wasm/build/kernels.wasm 1025,4001
 * ```
 *
 * @module
 */
import { buildWasm, WASM_URL } from "../../kernels/wasm/build.ts";
import { rnd, Side } from "./tile_lib.ts";

const [other, ctxArg] = Deno.args;
if (!other) {
  console.error("usage: deno run -A bench/tools/attention_decode.ts OTHER_KERNELS.wasm [CTX,…]");
  Deno.exit(2);
}
const contexts = ctxArg ? ctxArg.split(",").map(Number) : [1025, 4001];
await buildWasm();
const sides = [
  new Side(new WebAssembly.Module(await Deno.readFile(other)), "other"),
  new Side(new WebAssembly.Module(await Deno.readFile(WASM_URL)), "this"),
];
const L = 12, nHeads = 12, nKV = 12, hd = 64, kvDim = nKV * hd;

for (const ctx of contexts) {
  const kv = new Float32Array(2 * L * ctx * kvDim);
  for (let i = 0; i < kv.length; i++) kv[i] = rnd() - 0.5;
  const q = new Float32Array(nHeads * hd);
  for (let i = 0; i < q.length; i++) q[i] = rnd() - 0.5;
  const runs = sides.map((s) => {
    s.reset();
    const { k } = s;
    const byHead = typeof k.storeHeads === "function";
    const rows = s.floats(kv); // [2L][ctx × kvDim]: layer l's keys, then its values
    const caches = Array.from({ length: 2 * L }, () => s.alloc(ctx * kvDim * 4));
    for (let c = 0; c < 2 * L; c++) {
      const src = rows + c * ctx * kvDim * 4;
      if (byHead) k.storeHeads(src, caches[c], ctx, kvDim, hd, ctx, 0);
      else s.u8.copyWithin(caches[c], src, src + ctx * kvDim * 4);
    }
    const qa = s.floats(q);
    const out = s.output(nHeads * hd);
    const scr = s.alloc((hd + ctx + 8) * 4 + 16 * hd + 4096);
    // (builds before the head-by-head cache take 15 arguments and ignore the last two)
    const token = () => {
      for (let l = 0; l < L; l++) {
        k.attention(
          qa,
          caches[2 * l],
          caches[2 * l + 1],
          out.at,
          ctx - 1,
          1,
          nHeads,
          nKV,
          hd,
          0.125,
          0,
          0,
          nKV,
          scr,
          1,
          byHead ? ctx * hd : hd,
          1,
        );
      }
    };
    return { token, out: out.read };
  });
  const best = [Infinity, Infinity];
  for (let round = 0; round < 5; round++) {
    for (const [i, r] of runs.entries()) {
      const t0 = performance.now();
      r.token();
      best[i] = Math.min(best[i], performance.now() - t0);
    }
  }
  const [a, b] = runs.map((r) => r.out());
  const same = a.every((v, i) => Object.is(v, b[i]));
  console.log(
    `${ctx} positions: other ${best[0].toFixed(2)} ms, this ${best[1].toFixed(2)} ms a token, ` +
      `${(best[0] / best[1]).toFixed(2)}x; ${same ? "identical" : "DIFFERENT"}`,
  );
}
