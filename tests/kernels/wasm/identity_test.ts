/**
 * WASM matmuls are bit-identical to the reference backend for every weight type on matrices of a
 * real model's width (≥ 2048 columns) and at the row counts the engine uses: 1 (decode), 7 (a
 * short prompt or a few batched sessions) and 64 (prefill). The narrow shapes of ops_test.ts never
 * reached the kernels' wide-row code paths; a Q3_K mix once differed there by 0.03 in the logits.
 */
import { GGMLType, quantizeRow, typeName } from "../../../kernels/quant/mod.ts";
import { createReferenceBackend } from "../../../kernels/reference/mod.ts";
import { createWasmBackend, type WasmBackend } from "../../../kernels/wasm/mod.ts";
import { assertEquals } from "../../support/assert.ts";
import { assertClose, bufOf, rand, WEIGHT_TYPES, weightBytes } from "./helpers.ts";

const N = 2048;
const M = 38; // output rows: not a multiple of 8 or 4 (a tail outside the 4-row layouts)
const ROWS = [1, 7, 64];

// Q8_0 also over the activation's P/N planes: hosts whose relaxed dot takes the biased
// activation run the other form everywhere else, and Arm or x86 without VNNI run this one.
const CASES = [
  ...WEIGHT_TYPES.map((t) => ({ ...t, biasedQ8: undefined as boolean | undefined })),
  { type: GGMLType.Q8_0, name: "Q8_0 (P/N planes)", biasedQ8: false },
];

for (const { type, name, biasedQ8 } of CASES) {
  Deno.test(`wasm matmul ${name}: bit-identical to reference at n=${N}, rows ${ROWS}`, async () => {
    const wasm = await createWasmBackend({ threads: 2, biasedQ8 });
    const ref = createReferenceBackend();
    try {
      // Wide activations (|x| up to 8) and one long row: scales, sign handling and the float
      // steps all see values far from the small-range inputs of the op tests.
      const n = type === GGMLType.F32 || type === GGMLType.F16 || type === GGMLType.BF16
        ? N + 3
        : N;
      const spec = { name: `w_${name}`, type, shape: [n, M], data: weightBytes(type, n, M, 77) };
      const ww = wasm.upload(spec);
      const wr = ref.upload(spec);
      for (const rows of ROWS) {
        const x = rand(rows * n, 1000 + rows, 8);
        const xw = bufOf(wasm, x);
        const xr = bufOf(ref, x);
        const ow = wasm.buffer(rows * M);
        const or = ref.buffer(rows * M);
        wasm.matmul(ww, xw, ow, rows);
        ref.matmul(wr, xr, or, rows);
        assertClose(await wasm.read(ow), await ref.read(or), 0, `${name} rows=${rows}`);
        for (const b of [xw, ow]) wasm.free(b);
        for (const b of [xr, or]) ref.free(b);
      }
    } finally {
      wasm.dispose();
      ref.dispose();
    }
  });
}

Deno.test("wasm matmulMany: one job per run of same-type weights, results of matmul each", async () => {
  // Q8_0, Q8_0, Q4_0, Q6_K, Q6_K: jobs [Q8_0 ×2], [Q4_0], [Q6_K ×2]; a 256 KiB memory cap puts
  // later weights in other memories (their outputs copied back), threads split every part.
  const types = [GGMLType.Q8_0, GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q6_K, GGMLType.Q6_K];
  const rowsOut = [36, 20, 44, 8, 12];
  const n = 2048;
  for (const memoryCap of [4 * 1024 * 1024 * 1024, 256 << 10]) {
    const wasm = await createWasmBackend({ threads: 2, memoryCap });
    const ref = createReferenceBackend();
    try {
      const specs = types.map((type, i) => ({
        name: `w${i}`,
        type,
        shape: [n, rowsOut[i]],
        data: weightBytes(type, n, rowsOut[i], 300 + i),
      }));
      const ww = specs.map((s) => wasm.upload(s));
      if (memoryCap < 1 << 20 && !wasm.device.includes("memories")) {
        throw new Error(`the cap did not spread the weights: ${wasm.device}`);
      }
      const wr = specs.map((s) => ref.upload(s));
      for (const rows of [1, 5]) {
        const x = rand(rows * n, 9 + rows, 4);
        const xw = bufOf(wasm, x);
        const xr = bufOf(ref, x);
        const ow = rowsOut.map((m) => wasm.buffer(rows * m));
        const or = rowsOut.map((m) => ref.buffer(rows * m));
        wasm.matmulMany!(ww, xw, ow, rows);
        for (let i = 0; i < types.length; i++) ref.matmul(wr[i], xr, or[i], rows);
        for (let i = 0; i < types.length; i++) {
          assertClose(await wasm.read(ow[i]), await ref.read(or[i]), 0, `part ${i} rows=${rows}`);
        }
      }
    } finally {
      wasm.dispose();
      ref.dispose();
    }
  }
});

Deno.test("wasm matmul: subnormal f16 scales (tiny weights) stay bit-identical", async () => {
  // weights of magnitude ~0.005 give K-quant super-block scales below f16's normal range (and
  // Q4_0/Q8_0 block scales for the smallest blocks): the f16 -> f32 conversions must be exact
  // there too
  const wasm = await createWasmBackend({ threads: 2 });
  const ref = createReferenceBackend();
  try {
    for (const { type, name } of WEIGHT_TYPES) {
      const n = 512;
      const f = rand(n * 12, 55, 0.005);
      const spec = {
        name: `tiny_${name}`,
        type,
        shape: [n, 12],
        data: quantizeRow(type, f, f.length),
      };
      const ww = wasm.upload(spec);
      const wr = ref.upload(spec);
      for (const rows of [1, 6]) {
        const x = rand(rows * n, 7 + rows, 2);
        const [xw, xr] = [bufOf(wasm, x), bufOf(ref, x)];
        const [ow, or] = [wasm.buffer(rows * 12), ref.buffer(rows * 12)];
        wasm.matmul(ww, xw, ow, rows);
        ref.matmul(wr, xr, or, rows);
        assertClose(await wasm.read(ow), await ref.read(or), 0, `${name} tiny rows=${rows}`);
      }
    }
  } finally {
    wasm.dispose();
    ref.dispose();
  }
});

Deno.test("wasm matmul: an odd number of output rows and 2-5 activation rows stay bit-identical", async () => {
  // odd shares of rows per thread (kernels that once took two weight rows per pass, Q4_K's,
  // left a last single row); 2, 3 and 5 activation rows mix the decode path with the 4-row tiles
  const wasm = await createWasmBackend({ threads: 2 });
  const ref = createReferenceBackend();
  try {
    for (const { type, name } of WEIGHT_TYPES) {
      const n = type === GGMLType.F32 || type === GGMLType.F16 || type === GGMLType.BF16
        ? 515
        : 512;
      const m = 37;
      const spec = { name: `odd_${name}`, type, shape: [n, m], data: weightBytes(type, n, m, 91) };
      const ww = wasm.upload(spec);
      const wr = ref.upload(spec);
      for (const rows of [2, 3, 5]) {
        const x = rand(rows * n, 40 + rows, 3);
        const [xw, xr] = [bufOf(wasm, x), bufOf(ref, x)];
        const [ow, or] = [wasm.buffer(rows * m), ref.buffer(rows * m)];
        wasm.matmul(ww, xw, ow, rows);
        ref.matmul(wr, xr, or, rows);
        assertClose(await wasm.read(ow), await ref.read(or), 0, `${name} odd rows=${rows}`);
        for (const b of [xw, ow]) wasm.free(b);
        for (const b of [xr, or]) ref.free(b);
      }
    }
  } finally {
    wasm.dispose();
    ref.dispose();
  }
});

Deno.test("wasm matmul Q8_0, Q4_0, Q4_K and Q6_K: batches of 1-17 rows (a decode step of up to 17 sessions) stay bit-identical", async () => {
  // the biased Q8_0 kernel's, the Q4_0 kernel's and the Q4_K and Q6_K kernels' tiles of 8
  // activation rows (over row groups of 4, the last one padded), of 4, and single rows in every
  // mix, at the 110M model's width and an odd block count; 38 output rows leave a partial weight
  // group; Q4_K and Q6_K also 35, 38 and 70 rows (tiles across their 32-row activation blocks, a
  // padded last 4-row or 8-row tile; their 2-row passes and 4-row tiles are in 2-4 and 10-12)
  const wasm = await createWasmBackend({ threads: 2 });
  const ref = createReferenceBackend();
  try {
    for (const type of [GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_K, GGMLType.Q6_K]) {
      const k = type === GGMLType.Q4_K || type === GGMLType.Q6_K;
      for (const n of k ? [768, 1280] : [768, 288]) {
        const m = 38;
        const spec = { name: "batch", type, shape: [n, m], data: weightBytes(type, n, m, 5) };
        const ww = wasm.upload(spec);
        const wr = ref.upload(spec);
        const rowCounts = Array.from({ length: 17 }, (_, i) => i + 1).concat(k ? [35, 38, 70] : []);
        for (const rows of rowCounts) {
          const x = rand(rows * n, 600 + rows, 6);
          const [xw, xr] = [bufOf(wasm, x), bufOf(ref, x)];
          const [ow, or] = [wasm.buffer(rows * m), ref.buffer(rows * m)];
          wasm.matmul(ww, xw, ow, rows);
          ref.matmul(wr, xr, or, rows);
          const msg = `${typeName(type)} n=${n} rows=${rows}`;
          assertClose(await wasm.read(ow), await ref.read(or), 0, msg);
          for (const b of [xw, ow]) wasm.free(b);
          for (const b of [xr, or]) ref.free(b);
        }
        wasm.free(ww);
      }
    }
  } finally {
    wasm.dispose();
    ref.dispose();
  }
});

Deno.test("wasm matmul: one activation read by Q8_0 over P/N planes and by Q4_0 (row groups) in turn", async () => {
  // both forms sit after the activation's sums; each matmul must find its own there
  for (const biasedQ8 of [false, true]) {
    const wasm = await createWasmBackend({ threads: 2, ...(biasedQ8 ? {} : { biasedQ8: false }) });
    const ref = createReferenceBackend();
    try {
      const n = 512, m = 20, rows = 16;
      const types = [GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q8_0, GGMLType.Q4_0];
      const x = rand(rows * n, 77, 4);
      const [xw, xr] = [bufOf(wasm, x), bufOf(ref, x)];
      for (const [i, type] of types.entries()) {
        const spec = { name: `w${i}`, type, shape: [n, m], data: weightBytes(type, n, m, 30 + i) };
        const [ww, wr] = [wasm.upload(spec), ref.upload(spec)];
        const [ow, or] = [wasm.buffer(rows * m), ref.buffer(rows * m)];
        wasm.matmul(ww, xw, ow, rows);
        ref.matmul(wr, xr, or, rows);
        const msg = `${typeName(type)} #${i} (biasedQ8 ${wasm.biasedQ8})`;
        assertClose(await wasm.read(ow), await ref.read(or), 0, msg);
      }
    } finally {
      wasm.dispose();
      ref.dispose();
    }
  }
});

/** One `n`-wide matrix (64 rows of `type`, weights from `seed`) × vector on `wasm`: run → result. */
function oneMatvec(wasm: WasmBackend, type: GGMLType, n: number, seed: number) {
  const m = 64;
  const w = wasm.upload({ name: "w", type, shape: [n, m], data: weightBytes(type, n, m, seed) });
  const x = bufOf(wasm, rand(n, 4, 2));
  const out = wasm.buffer(m);
  return () => {
    wasm.matmul(w, x, out, 1);
    return wasm.read(out);
  };
}

Deno.test("wasm pool: workers that sleep between jobs (spinMicros 0) and spinning ones give the same results", async () => {
  const wasm = await createWasmBackend({ threads: 2, spinMicros: 0 });
  try {
    const matvec = oneMatvec(wasm, GGMLType.Q4_K, 2048, 9);
    const results: Float32Array[] = [];
    for (const us of [0, 0, 5000, 0]) {
      wasm.spinMicros = us;
      const s0 = wasm.workerSleeps;
      // a gap longer than no spin at all: the worker goes to sleep and must be woken
      await new Promise((r) => setTimeout(r, 5));
      results.push(await matvec());
      if (us === 0 && wasm.workerSleeps === s0) {
        // the worker may still have been inside its first spin; one more gap must put it to sleep
        await new Promise((r) => setTimeout(r, 5));
        await matvec();
        if (wasm.workerSleeps === s0) throw new Error("spinMicros 0: the worker never slept");
      }
    }
    for (const r of results.slice(1)) assertClose(r, results[0], 0, "Q4_K with and without spin");
  } finally {
    wasm.dispose();
  }
});

Deno.test("wasm pool: park() sends a spinning worker to sleep now; the next op wakes it and spins again", async () => {
  // A spin of 2 s: without park() the worker would still be spinning when the test looks.
  const wasm = await createWasmBackend({ threads: 2, spinMicros: 2_000_000 });
  try {
    const matvec = oneMatvec(wasm, GGMLType.Q8_0, 1024, 3);
    const first = await matvec();
    const s0 = wasm.workerSleeps;
    await new Promise((r) => setTimeout(r, 20));
    assertEquals(wasm.workerSleeps, s0, "the worker spins for its next job");
    wasm.park();
    for (let i = 0; i < 100 && wasm.workerSleeps === s0; i++) {
      await new Promise((r) => setTimeout(r, 2));
    }
    assertEquals(wasm.workerSleeps, s0 + 1, "park() put the worker to sleep");
    assertEquals(wasm.spinMicros, 2_000_000, "the setting is kept");
    assertClose(await matvec(), first, 0, "after park()");
    await new Promise((r) => setTimeout(r, 20));
    assertEquals(wasm.workerSleeps, s0 + 1, "woken, the worker spins again");
  } finally {
    wasm.dispose();
  }
});
