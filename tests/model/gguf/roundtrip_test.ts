// writeGGUF → parseGGUF must give back exactly what was written (v2 and v3, every value type,
// nested arrays, any alignment), and writing the parsed file again must give the same bytes.
import fc from "fast-check";
import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { GGMLType, typeInfo } from "../../../kernels/quant/types.ts";
import {
  type GGUFArray,
  type GGUFMetadataEntry,
  type GGUFValue,
  GGUFValueType,
  meta,
  parseGGUF,
  writeGGUF,
} from "../../../model/gguf/mod.ts";

const T = GGUFValueType;
const f32 = fc.float({ noDefaultInfinity: false }).map(Math.fround);
const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
const i64 = fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n });
// Lone surrogates would not survive UTF-8; real GGUF strings are valid UTF-8.
const str = fc.string({ unit: "grapheme", maxLength: 12 });

function scalar(t: GGUFValueType): fc.Arbitrary<GGUFValue> {
  switch (t) {
    case T.UINT8:
      return fc.integer({ min: 0, max: 255 });
    case T.INT8:
      return fc.integer({ min: -128, max: 127 });
    case T.UINT16:
      return fc.integer({ min: 0, max: 65535 });
    case T.INT16:
      return fc.integer({ min: -32768, max: 32767 });
    case T.UINT32:
      return fc.integer({ min: 0, max: 0xffffffff });
    case T.INT32:
      return fc.integer({ min: -0x80000000, max: 0x7fffffff });
    case T.FLOAT32:
      return f32;
    case T.BOOL:
      return fc.boolean();
    case T.STRING:
      return str;
    case T.UINT64:
      return u64;
    case T.INT64:
      return i64;
    default:
      return fc.double();
  }
}

const SCALAR_TYPES = [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12] as GGUFValueType[];

function arrayOf(depth: number): fc.Arbitrary<GGUFArray> {
  const types = depth > 0 ? [...SCALAR_TYPES, T.ARRAY] : SCALAR_TYPES;
  return fc.constantFrom(...types).chain((itemType) => {
    if (itemType === T.ARRAY) {
      return fc.array(arrayOf(depth - 1), { maxLength: 3 }).map((values) => ({ itemType, values }));
    }
    return fc.array(scalar(itemType), { maxLength: 6 }).map((values) =>
      meta.array("", itemType, values as number[]).value as GGUFArray
    );
  });
}

const valueEntry: fc.Arbitrary<Omit<GGUFMetadataEntry, "key">> = fc.oneof(
  fc.constantFrom(...SCALAR_TYPES).chain((type) => scalar(type).map((value) => ({ type, value }))),
  arrayOf(2).map((value) => ({ type: T.ARRAY, value })),
);

const TENSOR_TYPES = [GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.Q8_0, GGMLType.Q4_K];

const tensor = fc.record({
  type: fc.constantFrom(...TENSOR_TYPES),
  rows: fc.array(fc.integer({ min: 1, max: 3 }), { maxLength: 3 }),
  blocks: fc.integer({ min: 1, max: 3 }),
  seed: fc.nat(),
}).map(({ type, rows, blocks, seed }) => {
  const info = typeInfo(type)!;
  const dims = [info.blockSize * blocks, ...rows];
  const n = dims.reduce((p, d) => p * d, 1) / info.blockSize * info.typeSize;
  return { dims, type, data: Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 255) };
});

const spec = fc.record({
  version: fc.constantFrom(2 as const, 3 as const),
  entries: fc.uniqueArray(fc.tuple(str, valueEntry), { maxLength: 8, selector: ([k]) => k }),
  alignment: fc.constantFrom(undefined, 1, 8, 32, 64, 256),
  tensors: fc.uniqueArray(fc.tuple(str, tensor), { maxLength: 5, selector: ([n]) => n }),
}).map(({ version, entries, alignment, tensors }) => {
  const metadata: GGUFMetadataEntry[] = entries
    .filter(([key]) => key !== "general.alignment")
    .map(([key, e]) => ({ key, ...e }));
  if (alignment !== undefined) metadata.push(meta.u32("general.alignment", alignment));
  return {
    version,
    metadata,
    tensors: tensors.map(([name, t]) => ({ name, ...t })),
  };
});

Deno.test("write → parse gives back the same metadata and tensors, and the same bytes", async () => {
  await fc.assert(
    fc.asyncProperty(spec, async (s) => {
      const bytes = writeGGUF(s);
      const f = await parseGGUF(bytes);
      assertEquals(f.version, s.version);
      assertEquals(f.metadata.entries(), s.metadata);
      const tensors = [];
      for (const t of f.tensors) {
        tensors.push({
          name: t.name,
          dims: [...t.dims],
          type: t.type,
          data: await f.readTensor(t),
        });
      }
      assertEquals(tensors, s.tensors);
      for (const t of f.tensors) assertEquals(t.offset % f.alignment, 0);
      assertEquals(
        writeGGUF({ version: f.version as 2 | 3, metadata: f.metadata.entries(), tensors }),
        bytes,
      );
    }),
    { numRuns: 400 },
  );
});

Deno.test("nested arrays of strings and numbers round-trip", async () => {
  const nested: GGUFMetadataEntry = {
    key: "nested",
    type: T.ARRAY,
    value: {
      itemType: T.ARRAY,
      values: [
        { itemType: T.STRING, values: ["x", "ÿ", ""] },
        { itemType: T.ARRAY, values: [{ itemType: T.INT64, values: BigInt64Array.of(-1n, 5n) }] },
        { itemType: T.BOOL, values: [true, false, true] },
      ],
    },
  };
  for (const version of [2, 3] as const) {
    const f = await parseGGUF(writeGGUF({ version, metadata: [nested], tensors: [] }));
    assertEquals(f.metadata.entries(), [nested]);
  }
});
