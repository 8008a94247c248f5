/**
 * The WASM backend's topCandidates reads the logit row in place: the same candidates as the
 * host computation on a copy of the row (hostCandidates), every field bit for bit, and the row
 * is unchanged afterwards (the excluded ids are masked only while it is read).
 */
import { createWasmBackend } from "../../../kernels/wasm/mod.ts";
import { hostCandidates } from "../../../model/sampler.ts";
import { assertEquals } from "../../support/assert.ts";
import { bufOf } from "./helpers.ts";

/** Seeded logits on a 1/64 grid, so ties at the top are common. */
function logitsRow(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return Math.round(((s >>> 8) / 2 ** 24 - 0.5) * 12 * 64) / 64;
  });
}

Deno.test("wasm topCandidates: hostCandidates' answer, read in place, row left as it was", async () => {
  const be = await createWasmBackend({ threads: 1 });
  try {
    for (const [n, rows, k, nEx] of [[1000, 3, 40, 7], [32000, 1, 1, 0], [517, 2, 64, 256]]) {
      const all = new Float32Array(rows * n);
      for (let r = 0; r < rows; r++) all.set(logitsRow(n, 17 + r + n), r * n);
      // Excluded ids among the best (so they matter), out of order, one of them twice.
      const exclude = Array.from({ length: rows }, (_, r) => {
        const row = all.subarray(r * n, (r + 1) * n);
        const best = hostCandidates(row, { k: nEx, exclude: new Int32Array() })!.ids;
        const ex = Array.from(best).filter((_, i) => (i + r) % 2 === 0 || nEx > 100).reverse();
        if (ex.length) ex.push(ex[0]);
        return Int32Array.from(ex);
      });
      const buf = bufOf(be, all);
      const got = await be.topCandidates(buf, rows, n, k, exclude);
      assertEquals(Array.from(await be.read(buf)), Array.from(all), `n ${n}: row changed`);
      for (let r = 0; r < rows; r++) {
        const want = hostCandidates(all.slice(r * n, (r + 1) * n), { k, exclude: exclude[r] })!;
        const what = `n ${n} row ${r} k ${k}`;
        assertEquals(Array.from(got[r].ids), Array.from(want.ids), `${what}: ids`);
        assertEquals(Array.from(got[r].values), Array.from(want.values), `${what}: values`);
        assertEquals(Array.from(got[r].excluded), Array.from(want.excluded), `${what}: excluded`);
        assertEquals(got[r].max, want.max, `${what}: max`);
        assertEquals(got[r].sumExp, want.sumExp, `${what}: sum`);
      }
      be.free(buf);
    }
  } finally {
    be.dispose();
  }
});

Deno.test("wasm topCandidates: without sums, the same candidates and no softmax sum (NaN)", async () => {
  const be = await createWasmBackend({ threads: 1 });
  try {
    const n = 2000;
    const row = logitsRow(n, 5);
    const buf = bufOf(be, row);
    const exclude = [Int32Array.of(3, 1999)];
    const [lean] = await be.topCandidates(buf, 1, n, 40, exclude, false);
    const [full] = await be.topCandidates(buf, 1, n, 40, exclude);
    assertEquals(Array.from(lean.ids), Array.from(full.ids));
    assertEquals(Array.from(lean.values), Array.from(full.values));
    assertEquals(Array.from(lean.excluded), Array.from(full.excluded));
    assertEquals(lean.max, full.max);
    assertEquals(Number.isNaN(lean.sumExp) && Number.isFinite(full.sumExp), true);
    be.free(buf);
  } finally {
    be.dispose();
  }
});

Deno.test("wasm topCandidates: a row with one NaN says so (max NaN), with and without sums", async () => {
  // Before: without sums a NaN never ranked and the max was finite, so a served greedy request
  // answered from a row the model had broken.
  const be = await createWasmBackend({ threads: 1 });
  try {
    const n = 2000;
    const row = logitsRow(n, 9);
    row[1234] = NaN;
    const buf = bufOf(be, row);
    for (const sums of [true, false]) {
      const [c] = await be.topCandidates(buf, 1, n, 4, [new Int32Array()], sums);
      assertEquals(Number.isNaN(c.max), true, `sums ${sums}: max ${c.max}`);
      assertEquals(Array.from(c.values).some(Number.isNaN), false, `sums ${sums}: a NaN ranked`);
    }
    // An excluded NaN comes back among the excluded values, where the caller sees it.
    const [ex] = await be.topCandidates(buf, 1, n, 4, [Int32Array.of(1234)], false);
    assertEquals(Number.isNaN(ex.excluded[0]), true);
    be.free(buf);
  } finally {
    be.dispose();
  }
});
