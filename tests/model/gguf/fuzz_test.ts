// Corrupt input must only ever produce a GGUFError: truncation at every byte, bit flips, absurd
// counts and lengths. The MemorySource throws a RangeError on any read outside the file, so
// "only GGUFError" also proves the reader never asks for (or allocates for) more than the file.
import fc from "fast-check";
import { ok as assert } from "node:assert/strict";
import { GGUFError, MemorySource, readGGUF } from "../../../model/gguf/mod.ts";
import { sampleGGUF } from "./sample.ts";

const SAMPLE = sampleGGUF();

type Outcome = "ok" | "error";
let cases = 0;

/** Parses `bytes` and reads every tensor; any exception other than GGUFError fails the test. */
async function parseCleanly(bytes: Uint8Array): Promise<Outcome> {
  const src = new MemorySource(bytes);
  cases++;
  try {
    const f = await readGGUF(src);
    for (const t of f.tensors) if (t.nBytes !== undefined) await f.readTensor(t);
    f.metadata.entries();
    return "ok";
  } catch (e) {
    if (!(e instanceof GGUFError)) throw e;
    assert(e.message.startsWith("GGUF"), e.message);
    assert(e.offset === undefined || (e.offset >= 0 && e.offset <= bytes.length), e.message);
    return "error";
  } finally {
    assert(src.maxRequest <= bytes.length, `requested ${src.maxRequest} of ${bytes.length}`);
  }
}

function withU64(bytes: Uint8Array, at: number, v: bigint): Uint8Array {
  const out = bytes.slice();
  new DataView(out.buffer).setBigUint64(at, BigInt.asUintN(64, v), true);
  return out;
}

/** Offset of the u64 right after `key`'s bytes + `skip` bytes (to reach a count or length). */
function after(key: string, skip: number): number {
  const k = new TextEncoder().encode(key);
  outer: for (let i = 0; i + k.length <= SAMPLE.length; i++) {
    for (let j = 0; j < k.length; j++) if (SAMPLE[i + j] !== k[j]) continue outer;
    return i + k.length + skip;
  }
  throw new Error(`${key} not in sample`);
}

const ABSURD: bigint[] = [
  (1n << 64n) - 1n,
  (1n << 64n) - 8n,
  1n << 63n,
  (1n << 63n) - 1n,
  1n << 60n,
  1n << 53n,
  (1n << 53n) + 1n,
  1n << 32n,
  0xffffffffn,
  BigInt(SAMPLE.length),
  BigInt(SAMPLE.length + 1),
  BigInt(SAMPLE.length) * 2n,
  1000000n,
];

Deno.test("the sample file parses", async () => {
  assert((await parseCleanly(SAMPLE)) === "ok");
});

Deno.test("truncation at every byte boundary gives a GGUFError", async () => {
  const f = await readGGUF(new MemorySource(SAMPLE));
  const last = f.tensors.at(-1)!;
  // The zero padding after the last tensor is not needed, so only cuts before its end must fail.
  const end = f.dataOffset + last.offset + last.nBytes!;
  for (let n = 0; n <= SAMPLE.length; n++) {
    const r = await parseCleanly(SAMPLE.subarray(0, n));
    assert(r === (n < end ? "error" : "ok"), `truncated to ${n} bytes: ${r}`);
  }
});

Deno.test("random bit flips: only GGUFError", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.nat({ max: SAMPLE.length * 8 - 1 }), { minLength: 1, maxLength: 4 }),
      async (bits) => {
        const b = SAMPLE.slice();
        for (const bit of bits) b[bit >> 3] ^= 1 << (bit & 7);
        await parseCleanly(b);
      },
    ),
    { numRuns: 5000 },
  );
});

Deno.test("absurd u64 at any offset: only GGUFError", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.nat({ max: SAMPLE.length - 8 }),
      fc.oneof(fc.constantFrom(...ABSURD), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n })),
      async (at, v) => {
        await parseCleanly(withU64(SAMPLE, at, v));
      },
    ),
    { numRuns: 3000 },
  );
});

Deno.test("absurd counts and lengths at known fields fail fast", async () => {
  const fields = {
    tensor_count: 8,
    metadata_kv_count: 16,
    firstKeyLength: 24,
    architectureLength: after("general.architecture", 4),
    tokensCount: after("tokenizer.ggml.tokens", 8),
    firstTokenLength: after("tokenizer.ggml.tokens", 16),
    scoresCount: after("t.scores", 8),
    nestedCount: after("t.nested", 8),
    innerCount: after("t.nested", 20),
    tensorNameLength: after("t.nested", 4 + 4 + 8) + 4 + 8 + 2 * 2 + 4 + 8 + 8 + 1,
  };
  let cases = 0;
  for (const [field, at] of Object.entries(fields)) {
    for (const v of ABSURD) {
      const t0 = performance.now();
      const r = await parseCleanly(withU64(SAMPLE, at, v));
      assert(performance.now() - t0 < 1000, `${field}=${v} took too long`);
      if (v > BigInt(SAMPLE.length)) assert(r === "error", `${field}=${v} parsed`);
      cases++;
    }
  }
  assert(cases > 100);
});

Deno.test("random bytes after a valid prefix: only GGUFError", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.nat({ max: SAMPLE.length }),
      fc.uint8Array({ maxLength: 256 }),
      async (cut, tail) => {
        const b = new Uint8Array(cut + tail.length);
        b.set(SAMPLE.subarray(0, cut));
        b.set(tail, cut);
        await parseCleanly(b);
      },
    ),
    { numRuns: 1500 },
  );
});

Deno.test("a file of deeply nested array headers fails without exhausting the stack", async () => {
  const levels = 10000;
  const b = new Uint8Array(24 + 8 + 1 + 4 + levels * 12);
  const dv = new DataView(b.buffer);
  b.set([0x47, 0x47, 0x55, 0x46]);
  dv.setUint32(4, 3, true);
  dv.setBigUint64(8, 0n, true);
  dv.setBigUint64(16, 1n, true);
  dv.setBigUint64(24, 1n, true);
  b[32] = 0x6b; // key "k"
  dv.setUint32(33, 9, true); // ARRAY
  for (let i = 0; i < levels; i++) {
    dv.setUint32(37 + i * 12, 9, true); // item type ARRAY
    dv.setBigUint64(41 + i * 12, 1n, true); // one element
  }
  assert((await parseCleanly(b)) === "error");
});

Deno.test("at least 10,000 corrupt files were tried", () => {
  assert(cases >= 10000, `only ${cases} cases`);
});
