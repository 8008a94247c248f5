/**
 * The ops the newer architectures added (weight row views, scale, GELU-gated FFN, sliding-window
 * attention), run on a backend against the reference backend: one factory, registered by each
 * backend's test folder, like goldenTests.
 */
import type { Backend, Buf, KVCache } from "../../kernels/backend.ts";
import { GGMLType, quantizeRow } from "../../kernels/quant/mod.ts";
import { createReferenceBackend } from "../../kernels/reference/mod.ts";
import { assert } from "./assert.ts";

/** Deterministic floats in [-scale, scale) (mulberry32). */
function rand(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

function bufOf(be: Backend, x: Float32Array): Buf {
  const b = be.buffer(x.length);
  be.write(b, x);
  return b;
}

/** Throw unless `got` equals `want` bit for bit (tol 0) or within tol·max(1, |want|). */
function assertNear(got: Float32Array, want: Float32Array, tol: number, what: string): void {
  assert(got.length === want.length, `${what}: length ${got.length} ≠ ${want.length}`);
  for (let i = 0; i < want.length; i++) {
    const ok = tol === 0
      ? got[i] === want[i] || (Number.isNaN(got[i]) && Number.isNaN(want[i]))
      : Math.abs(got[i] - want[i]) <= tol * Math.max(1, Math.abs(want[i]));
    assert(ok, `${what}: element ${i} is ${got[i]}, reference ${want[i]} (tolerance ${tol})`);
  }
}

/** What a backend promises for the new ops, beyond the reference's semantics. */
export interface ArchOpsOptions {
  /** Tolerance of attention against the reference (0: bit-identical). */
  attentionTol: number;
  /** Tolerance of a whole matmul against the reference (default 0); views are always exact. */
  matmulTol?: number;
  ignore?: boolean;
}

/** Register the new-op tests for a backend factory. */
export function archOpsTests(
  label: string,
  makeBackend: () => Promise<Backend>,
  opts: ArchOpsOptions,
): void {
  const test = (name: string, fn: (be: Backend, ref: Backend) => Promise<void>) =>
    Deno.test({
      name: `${label}: ${name}`,
      ignore: opts.ignore,
      fn: async () => {
        const be = await makeBackend();
        const ref = createReferenceBackend();
        try {
          await fn(be, ref);
        } finally {
          be.dispose();
          ref.dispose();
        }
      },
    });

  test("scale is bit-identical to the reference", async (be, ref) => {
    for (const n of [1, 7, 64, 173]) {
      const x = rand(n, n, 40);
      const [xb, xr] = [bufOf(be, x), bufOf(ref, x)];
      be.scale(xb, Math.sqrt(3072), n);
      ref.scale(xr, Math.sqrt(3072), n);
      const got = await be.read(xb);
      assertNear(got, await ref.read(xr), 0, `scale n=${n}`);
      // an f32 multiply: exact for a power of two
      be.scale(xb, 0.5, n);
      const half = await be.read(xb);
      for (let i = 0; i < n; i++) assert(half[i] === got[i] / 2, `scale by 0.5 at ${i}`);
    }
  });

  test("geglu (ggml's f16 GELU table) is bit-identical to the reference", async (be, ref) => {
    const n = 4099;
    const g = rand(n, 5, 14);
    // the table's edges: ±10 pass through / zero, f16 rounding ties, tiny and signed zeros
    g.set([10, -10, 9.999, -9.999, 10.001, -10.001, 0, -0, 1e-8, -1e-8, 0.5, -3.25], 0);
    // … and what only a lane-wise f16 conversion could get wrong: NaN (ggml reads the table),
    // infinities, f16 subnormals and their rounding edge, values past f16's range
    g.set([NaN, Infinity, -Infinity, 6e-8, -6e-8, 2.98e-8, 3e-5, 65504, 65520, -1e-7], 12);
    const u = rand(n, 6, 3);
    const [gb, ub, ob] = [bufOf(be, g), bufOf(be, u), be.buffer(n)];
    const [gr, ur, or] = [bufOf(ref, g), bufOf(ref, u), ref.buffer(n)];
    be.geglu(gb, ub, ob, n);
    ref.geglu(gr, ur, or, n);
    const got = await be.read(ob);
    assertNear(got, await ref.read(or), 0, "geglu");
    assert(got[1] === 0 && got[5] === 0, "gelu(x ≤ −10) is 0");
    assert(got[0] === Math.fround(10 * u[0]), "gelu(10) is 10");
  });

  test("matmul through row views equals the viewed rows of the whole matmul", async (be, ref) => {
    const types = [GGMLType.F32, GGMLType.F16, GGMLType.Q4_0, GGMLType.Q8_0, GGMLType.Q4_K];
    for (const [t, type] of types.entries()) {
      const n = type === GGMLType.Q4_K ? 256 : 64;
      // a fused [q | k | v]-like matrix: 40 rows split 16 / 8 / 16, then a 3-D expert tensor
      const m = 40;
      const data = quantizeRow(type, rand(n * m, 70 + t), n * m);
      const spec = { name: `fused${t}`, type, shape: [n, m], data };
      const [w, wr] = [be.upload(spec), ref.upload(spec)];
      const rows = 5;
      const x = rand(rows * n, 80 + t, 2);
      const [xb, xr] = [bufOf(be, x), bufOf(ref, x)];
      const [whole, wholeR] = [be.buffer(rows * m), ref.buffer(rows * m)];
      be.matmul(w, xb, whole, rows);
      ref.matmul(wr, xr, wholeR, rows);
      const all = await be.read(whole);
      assertNear(all, await ref.read(wholeR), opts.matmulTol ?? 0, `whole matmul type ${type}`);
      for (const [first, count] of [[0, 16], [16, 8], [24, 16]]) {
        const v = be.weightRows(w, first, count);
        assert(v.shape[0] === n && v.shape[1] === count, `view shape ${v.shape}`);
        const out = be.buffer(rows * count);
        be.matmul(v, xb, out, rows);
        const got = await be.read(out);
        const want = new Float32Array(rows * count);
        for (let r = 0; r < rows; r++) {
          want.set(all.subarray(r * m + first, r * m + first + count), r * count);
        }
        assertNear(got, want, 0, `rows [${first}, ${first + count}) of type ${type}`);
        be.free(out);
        be.free(v); // frees nothing: the weight stays usable
      }
      be.matmul(w, xb, whole, rows);
      assertNear(await be.read(whole), all, 0, `type ${type} after its views were freed`);
      be.free(w);
    }
    const data = quantizeRow(GGMLType.Q8_0, rand(64 * 24, 90), 64 * 24);
    const e = be.upload({ name: "exps", type: GGMLType.Q8_0, shape: [64, 8, 3], data });
    let threw = false;
    try {
      be.weightRows(e, 20, 8);
    } catch {
      threw = true;
    }
    assert(threw, "a view past the last row is refused");
    be.free(e);
  });

  test(
    "copyRows and sumRowGroups (expert gather, weighted scatter, sum) are exact",
    async (be, ref) => {
      const cols = 37;
      const x = rand(6 * cols, 60, 3);
      const [xb, xr] = [bufOf(be, x), bufOf(ref, x)];
      // gather rows 4, 0, 4 into rows 0..2, then scatter them weighted into slots 5, 1, 2
      const gather = Int32Array.of(4, 0, 4);
      const [gb, gr] = [be.buffer(3 * cols), ref.buffer(3 * cols)];
      be.copyRows(xb, gather, gb, Int32Array.of(0, 1, 2), cols);
      ref.copyRows(xr, gather, gr, Int32Array.of(0, 1, 2), cols);
      const got = await be.read(gb);
      assertNear(got, await ref.read(gr), 0, "gather");
      assertNear(got.subarray(0, cols), x.subarray(4 * cols, 5 * cols), 0, "row 4 copied");
      const slots = Int32Array.of(5, 1, 2);
      const w = Float32Array.of(0.3, -1.7, 1e-3);
      const [sb, sr] = [bufOf(be, rand(6 * cols, 61)), bufOf(ref, rand(6 * cols, 61))];
      be.copyRows(gb, Int32Array.of(0, 1, 2), sb, slots, cols, w);
      ref.copyRows(gr, Int32Array.of(0, 1, 2), sr, slots, cols, w);
      const scattered = await be.read(sb);
      assertNear(scattered, await ref.read(sr), 0, "weighted scatter");
      assert(scattered[5 * cols] === Math.fround(got[0] * w[0]), "slot 5 = row 0 · 0.3 in f32");
      for (const k of [1, 2, 3]) {
        const groups = Math.floor(6 / k);
        const [ob, or] = [be.buffer(groups * cols), ref.buffer(groups * cols)];
        be.sumRowGroups(sb, ob, groups, k, cols);
        ref.sumRowGroups(sr, or, groups, k, cols);
        assertNear(await be.read(ob), await ref.read(or), 0, `sumRowGroups k=${k}`);
      }
      let threw = false;
      try {
        be.copyRows(xb, Int32Array.of(6), gb, Int32Array.of(0), cols);
      } catch {
        threw = true;
      }
      assert(threw, "a row past the buffer is refused");
    },
  );

  test("sliding-window attention matches the reference", async (be, ref) => {
    for (const type of ["f32", "f16"] as const) {
      for (const [nHeads, nKV, headDim, window] of [[4, 2, 16, 5], [2, 1, 32, 16], [3, 3, 8, 1]]) {
        const nCtx = 64;
        const kvDim = nKV * headDim;
        const cb = be.kvCache(1, nCtx, kvDim, type);
        const cr = ref.kvCache(1, nCtx, kvDim, type);
        const params = { nHeads, nKVHeads: nKV, headDim, scale: 1 / Math.sqrt(headDim), window };
        let pos = 0;
        for (const rows of [23, 1, 1, 9]) {
          const k = rand(rows * kvDim, 20 + pos, 1.5);
          const v = rand(rows * kvDim, 30 + pos, 1.5);
          const q = rand(rows * nHeads * headDim, 40 + pos, 1.5);
          const [kb, vb, qb] = [bufOf(be, k), bufOf(be, v), bufOf(be, q)];
          const [kr, vr, qr] = [bufOf(ref, k), bufOf(ref, v), bufOf(ref, q)];
          const ob = be.buffer(rows * nHeads * headDim);
          const or = ref.buffer(rows * nHeads * headDim);
          be.storeKV(cb, 0, kb, vb, pos, rows);
          ref.storeKV(cr, 0, kr, vr, pos, rows);
          be.attention(qb, cb, 0, ob, pos, rows, params);
          ref.attention(qr, cr, 0, or, pos, rows, params);
          const what = `window ${window} ${type} ${nHeads}/${nKV}×${headDim} pos ${pos}`;
          assertNear(await be.read(ob), await ref.read(or), opts.attentionTol, what);
          for (const b of [kb, vb, qb, ob]) be.free(b);
          pos += rows;
        }
        be.free(cb);
      }
    }
  });

  test("the reference's window attends exactly to the last `window` positions", (_be, ref) => {
    // Independent of the masking code: the same keys stored alone give the same attention.
    const [nHeads, headDim, window, pos] = [2, 8, 4, 10];
    const kvDim = headDim;
    const k = rand((pos + 1) * kvDim, 1, 2);
    const v = rand((pos + 1) * kvDim, 2, 2);
    const q = rand(nHeads * headDim, 3, 2);
    const full = ref.kvCache(1, 16, kvDim, "f32");
    const kept = ref.kvCache(1, 16, kvDim, "f32");
    const store = (c: KVCache, from: number, n: number, at: number) =>
      ref.storeKV(
        c,
        0,
        bufOf(ref, k.slice(from * kvDim, (from + n) * kvDim)),
        bufOf(ref, v.slice(from * kvDim, (from + n) * kvDim)),
        at,
        n,
      );
    store(full, 0, pos + 1, 0);
    store(kept, pos + 1 - window, window, 0);
    const p = { nHeads, nKVHeads: 1, headDim, scale: 0.3 };
    const [o1, o2] = [ref.buffer(nHeads * headDim), ref.buffer(nHeads * headDim)];
    ref.attention(bufOf(ref, q), full, 0, o1, pos, 1, { ...p, window });
    ref.attention(bufOf(ref, q), kept, 0, o2, window - 1, 1, p);
    return (async () => {
      assertNear(await ref.read(o1), await ref.read(o2), 1e-6, "window vs last positions");
    })();
  });
}
