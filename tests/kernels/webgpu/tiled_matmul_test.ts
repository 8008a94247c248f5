/**
 * The tiled prompt matmul (matmul_tiled.wgsl: activation rows staged in workgroup memory) for
 * every weight type that uses it (K-quants keep matmul.wgsl), forced on whatever this adapter's default: with one lane per weight row it
 * must equal the untiled kernel bit for bit (same sums in the same order), and with shared lanes
 * match the reference; rows span several tiles with a partial last one and partial row groups.
 */
import { GGMLType, typeName } from "../../../kernels/quant/mod.ts";
import { createReferenceBackend } from "../../../kernels/reference/mod.ts";
import { createWebGPUBackend, type WebGPUBackend } from "../../../kernels/webgpu/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";
import { bufOf, ignore, maxRelErr, randomFloats, randomWeight } from "./helpers.ts";

const TYPES: GGMLType[] = [
  GGMLType.F32,
  GGMLType.F16,
  GGMLType.BF16,
  GGMLType.Q4_0,
  GGMLType.Q4_1,
  GGMLType.Q5_0,
  GGMLType.Q5_1,
  GGMLType.Q8_0,
];

/** Row lengths over more than one tile (256 floats, 1024 quantized elements), the last partial. */
function rowLength(type: GGMLType): number {
  if (type === GGMLType.F32 || type === GGMLType.F16 || type === GGMLType.BF16) return 300;
  return 1280;
}

const backends: Record<string, WebGPUBackend> = ignore ? {} : {
  singleTiled: await createWebGPUBackend({ matmulLanes: "single", tiledPrefill: true }),
  singlePlain: await createWebGPUBackend({ matmulLanes: "single", tiledPrefill: false }),
  sharedTiled: await createWebGPUBackend({ matmulLanes: "shared", tiledPrefill: true }),
};
const ref = createReferenceBackend();

for (const type of TYPES) {
  Deno.test({
    ignore,
    name: `webgpu tiled prompt matmul ${typeName(type)}: untiled bit for bit, reference close`,
    fn: async () => {
      const k = rowLength(type);
      const all = [...Object.values(backends), ref];
      for (const [rows, nOut] of [[3, 37], [17, 70]]) {
        const ws = randomWeight(all, `w${type}`, type, [k, nOut], 31 + type + rows);
        const x = randomFloats(rows * k, 7 * type + rows, 2);
        const outs = await Promise.all(all.map(async (be, i) => {
          const xb = bufOf(be, x), ob = be.buffer(rows * nOut);
          be.matmul(ws[i], xb, ob, rows);
          const got = await be.read(ob);
          be.free(xb);
          be.free(ob);
          be.free(ws[i]);
          return got;
        }));
        const [singleTiled, singlePlain, sharedTiled, want] = outs;
        const what = `${typeName(type)} k=${k} rows=${rows}`;
        assertEquals(Array.from(singleTiled), Array.from(singlePlain), `${what}: tiled = untiled`);
        for (const [name, got] of [["single", singleTiled], ["shared", sharedTiled]] as const) {
          const err = maxRelErr(got, want);
          assert(err <= 1e-4, `${what} (${name} lanes): max rel error ${err} to the reference`);
        }
      }
    },
  });
}

Deno.test({
  ignore,
  name: "webgpu tiled prompt matmul: dispose",
  fn: () => {
    for (const be of Object.values(backends)) be.dispose();
  },
});
