// Exact error messages: each names what was wrong, the field and the byte offset.
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { GGMLType } from "../../../kernels/quant/types.ts";
import { GGUFError, GGUFValueType, meta, parseGGUF, writeGGUF } from "../../../model/gguf/mod.ts";
import { MAX_BOOL_ITEMS } from "../../../model/gguf/reader.ts";
import { sampleGGUF } from "./sample.ts";

async function errorOf(bytes: Uint8Array): Promise<GGUFError> {
  try {
    await parseGGUF(bytes);
  } catch (e) {
    assert(e instanceof GGUFError, `not a GGUFError: ${e}`);
    return e;
  }
  throw new Error("parsed without error");
}

/** A v3 header with the given counts, followed by `rest`. */
function header(nTensors: bigint, nKV: bigint, rest: number[] = [], version = 3): Uint8Array {
  const b = new Uint8Array(24 + rest.length);
  const dv = new DataView(b.buffer);
  b.set([0x47, 0x47, 0x55, 0x46]);
  dv.setUint32(4, version, true);
  dv.setBigUint64(8, nTensors, true);
  dv.setBigUint64(16, nKV, true);
  b.set(rest, 24);
  return b;
}

const u64le = (v: number) => [...new Uint8Array(new BigUint64Array([BigInt(v)]).buffer)];
const u32le = (v: number) => [...new Uint8Array(new Uint32Array([v]).buffer)];
const str = (s: string) => [...u64le(s.length), ...new TextEncoder().encode(s)];

Deno.test("truncated header", async () => {
  const e = await errorOf(header(0n, 0n).subarray(0, 12));
  assertEquals(
    e.message,
    "GGUF: truncated file: tensor_count needs 8 bytes at offset 8, file has 12",
  );
  assertEquals([e.field, e.offset], ["tensor_count", 8]);
  assertEquals(
    (await errorOf(new Uint8Array(0))).message,
    "GGUF: truncated file: magic needs 4 bytes at offset 0, file has 0",
  );
});

Deno.test("bad magic", async () => {
  const e = await errorOf(new Uint8Array([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]));
  assertEquals(
    e.message,
    'GGUF: not a GGUF file (magic 7f 45 4c 46 ".ELF", expected "GGUF"): magic at offset 0',
  );
});

Deno.test("version 1, big-endian and unknown versions", async () => {
  assertEquals(
    (await errorOf(header(0n, 0n, [], 1))).message,
    "GGUF: GGUF version 1 is not supported (re-convert the model with a current llama.cpp): version at offset 4",
  );
  assertEquals(
    (await errorOf(header(0n, 0n, [], 0x03000000))).message,
    "GGUF: big-endian GGUF files are not supported (version field reads 3 byte-swapped): version at offset 4",
  );
  assertEquals(
    (await errorOf(header(0n, 0n, [], 7))).message,
    "GGUF: unsupported GGUF version 7 (supported: 2, 3): version at offset 4",
  );
});

Deno.test("unknown value type 13 at key X", async () => {
  const e = await errorOf(header(0n, 1n, [...str("X"), ...u32le(13), 0, 0, 0, 0]));
  assertEquals(e.message, 'GGUF: unknown value type 13: metadata["X"].type at offset 33');
  assertEquals(e.field, 'metadata["X"].type');
});

Deno.test("absurd array count fails before allocating", async () => {
  // Patch the count to 2^60 u8 items.
  const b = header(0n, 1n, [...str("k"), ...u32le(9), ...u32le(0)]);
  const big = new Uint8Array(b.length + 8);
  big.set(b);
  new DataView(big.buffer).setBigUint64(b.length, 1n << 60n, true);
  assertEquals(
    (await errorOf(big)).message,
    'GGUF: truncated file: metadata["k"].value.count is 1152921504606846976, which needs at least 1152921504606846976 bytes at offset 49, file has 49',
  );
});

Deno.test("string longer than the file", async () => {
  const b = header(0n, 1n, [...u64le(5000), 0x61, ...new Array(12).fill(0)]);
  assertEquals(
    (await errorOf(b)).message,
    "GGUF: truncated file: metadata[0].key has length 5000, which needs 5000 bytes at offset 32, file has 45",
  );
});

Deno.test("tensor data past end of file", async () => {
  const full = sampleGGUF();
  const f = await parseGGUF(full);
  const cut = f.dataOffset + 40; // inside b.weight (offset 32, 34 bytes)
  const e = await errorOf(full.subarray(0, cut));
  assertEquals(
    e.message,
    `GGUF: tensor data past end of file: tensor "b.weight" spans bytes ${f.dataOffset + 32}..${
      f.dataOffset + 66
    }, file has ${cut}: tensor_infos[1].offset at offset ${e.offset}`,
  );
  assertEquals(e.field, "tensor_infos[1].offset");
});

Deno.test("tensor, alignment and duplicate checks name the culprit", async () => {
  const t = (dims: number[], type = GGMLType.F32) => ({
    name: "w",
    dims,
    type,
    data: new Uint8Array(dims.reduce((p, d) => p * d, 4)),
  });
  const good = writeGGUF({ metadata: [meta.string("a", "b")], tensors: [t([2, 2])] });
  // n_dims 5: patch the u32 after the name.
  const nDimsAt = 24 + 8 + 1 + 4 + 8 + 1 + 8 + 1;
  const bad = good.slice();
  new DataView(bad.buffer).setUint32(nDimsAt, 5, true);
  const e = await errorOf(bad);
  assertEquals(
    e.message,
    `GGUF: n_dims is 5, must be 1..4: tensor_infos[0].n_dims at offset ${nDimsAt}`,
  );

  // Q8_0 row of 33 elements (not a multiple of 32): write as unknown-size bytes, then retype.
  const q = writeGGUF({
    metadata: [],
    tensors: [{ name: "q", dims: [33], type: 99, data: new Uint8Array(36) }],
  });
  new DataView(q.buffer).setUint32(24 + 8 + 1 + 4 + 8, GGMLType.Q8_0, true);
  assertEquals(
    (await errorOf(q)).message,
    'GGUF: tensor "q" of type Q8_0 has row length 33, not a multiple of the block size 32: tensor_infos[0].dims[0] at offset 24',
  );

  assertEquals(
    (await errorOf(
      writeGGUF({ metadata: [meta.u32("general.alignment", 32)], tensors: [] }).map(
        (b, i, a) => (i === a.length - 4 ? 48 : b),
      ),
    )).message,
    'GGUF: general.alignment 48 is not a non-zero power of two: metadata["general.alignment"].value at offset 24',
  );
  const dup = header(0n, 2n, [...str("k"), ...u32le(0), 1, ...str("k"), ...u32le(0), 2]);
  assertEquals(
    (await errorOf(dup)).message,
    'GGUF: duplicate metadata key (first at offset 24): metadata["k"] at offset 38',
  );
});

Deno.test("typed getters name the key and both types", async () => {
  const f = await parseGGUF(sampleGGUF());
  assertEquals(f.metadata.number("t.u64"), 2 ** 40);
  assertEquals(f.metadata.stringOr("missing", "d"), "d");
  try {
    f.metadata.string("llama.context_length");
    throw new Error("no error");
  } catch (e) {
    assert(e instanceof GGUFError);
    assert(
      e.message.startsWith(
        'GGUF: metadata["llama.context_length"] should be a string, but the file has UINT32',
      ),
      e.message,
    );
  }
  try {
    f.metadata.stringArray("t.scores");
    throw new Error("no error");
  } catch (e) {
    assert(e instanceof GGUFError);
    assert(
      e.message.includes("should be ARRAY<STRING>, but the file has ARRAY<FLOAT32>"),
      e.message,
    );
  }
  try {
    f.metadata.number("nope");
    throw new Error("no error");
  } catch (e) {
    assert(e instanceof GGUFError);
    assertEquals(e.message, 'GGUF: missing metadata key "nope" (expected a number)');
  }
  try {
    await f.readTensor("nope");
    throw new Error("no error");
  } catch (e) {
    assert(e instanceof GGUFError);
  }
  assertEquals(GGUFValueType[f.metadata.entry("t.nested")!.type], "ARRAY");
});

Deno.test("tensors whose byte ranges overlap are refused by name", async () => {
  const bytes = writeGGUF({
    metadata: [],
    tensors: [
      { name: "a", dims: [8192], type: 0, data: new Uint8Array(32 * 1024) },
      { name: "b", dims: [8], type: 0, data: new Uint8Array(32) },
    ],
  });
  // Point "b" (8192 floats now) at "a"'s bytes: before, it was read, and uploaded, twice.
  const name = new TextEncoder().encode("b");
  let at = -1;
  for (let i = 8; i < 400 && at < 0; i++) {
    if (bytes[i] === name[0] && bytes[i - 8] === 1 && bytes[i + 1] === 1) at = i;
  }
  assert(at > 0, "tensor b's index entry");
  const dv = new DataView(bytes.buffer, bytes.byteOffset);
  dv.setBigUint64(at + 1 + 4, 8192n, true); // dims[0]
  dv.setBigUint64(at + 1 + 4 + 8 + 4, 0n, true); // offset
  const e = await errorOf(bytes);
  assert(e.message.includes(`tensors "a" and "b" overlap`), e.message);
});

Deno.test("arrays of arrays are bounded: 12 bytes of file must not cost 250 of heap each", async () => {
  // key "x" = ARRAY of N empty ARRAY<UINT8> (llama.cpp reads no arrays of arrays at all).
  const N = 70_000;
  const buf = new Uint8Array(4 + 4 + 8 + 8 + 9 + 4 + 4 + 8 + N * 12);
  const dv = new DataView(buf.buffer);
  buf.set([0x47, 0x47, 0x55, 0x46]);
  let o = 4;
  dv.setUint32(o, 3, true), o += 4; // version
  dv.setBigUint64(o, 0n, true), o += 8; // tensors
  dv.setBigUint64(o, 1n, true), o += 8; // keys
  dv.setBigUint64(o, 1n, true), o += 8, buf[o++] = 0x78; // "x"
  dv.setUint32(o, 9, true), o += 4; // ARRAY
  dv.setUint32(o, 9, true), o += 4; // of ARRAY
  dv.setBigUint64(o, BigInt(N), true), o += 8;
  const e = await errorOf(buf);
  assert(e.message.includes("arrays inside arrays"), e.message);
});

/** A v3 file whose only key "a" is an ARRAY<BOOL> of each count (each element 1), in turn. */
function boolArrays(...counts: number[]): Uint8Array {
  const size = counts.reduce((n, c) => n + 8 + 1 + 4 + 4 + 8 + c, 24);
  const buf = new Uint8Array(size);
  const dv = new DataView(buf.buffer);
  buf.set([0x47, 0x47, 0x55, 0x46]);
  dv.setUint32(4, 3, true);
  dv.setBigUint64(16, BigInt(counts.length), true); // keys
  let o = 24;
  for (const [i, n] of counts.entries()) {
    dv.setBigUint64(o, 1n, true), o += 8, buf[o++] = 0x61 + i; // "a", "b", ...
    dv.setUint32(o, 9, true), o += 4; // ARRAY
    dv.setUint32(o, 7, true), o += 4; // of BOOL
    dv.setBigUint64(o, BigInt(n), true), o += 8;
    buf.fill(1, o, o + n), o += n;
  }
  return buf;
}

Deno.test("BOOL arrays are bounded: 1 byte of file must not cost ~20 of heap each", async () => {
  // One array over the bound: refused before any element is read, naming the count.
  const e = await errorOf(boolArrays(MAX_BOOL_ITEMS + 1));
  assertEquals(
    e.message,
    `GGUF: more than ${MAX_BOOL_ITEMS} BOOL array elements (llama.cpp's keys hold a few per layer)` +
      `: metadata["a"].value.count at offset 49`,
  );
  assertEquals([e.field, e.offset], ['metadata["a"].value.count', 49]);
  // The bound is on the whole file: two arrays within it each, over it together.
  const half = MAX_BOOL_ITEMS / 2 + 1;
  assertEquals((await errorOf(boolArrays(half, half))).field, 'metadata["b"].value.count');
  // At the bound they still parse, as booleans.
  const f = await parseGGUF(boolArrays(MAX_BOOL_ITEMS - 3, 3));
  const a = f.metadata.get("a") as { values: boolean[] };
  assertEquals([a.values.length, a.values[0], a.values.at(-1)], [MAX_BOOL_ITEMS - 3, true, true]);
  assertEquals(f.metadata.get("b"), { itemType: GGUFValueType.BOOL, values: [true, true, true] });
});
