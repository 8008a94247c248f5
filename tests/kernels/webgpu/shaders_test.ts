/** Shader sources: the embedded copy is current, and composition resolves every directive. */
import { generateShaderModule } from "../../../kernels/webgpu/gen_shaders.ts";
import { compose, decodeSnippet, preprocess } from "../../../kernels/webgpu/shaders.ts";
import { assert, assertEquals, assertThrows } from "../../support/assert.ts";

Deno.test("webgpu shaders: shaders.gen.ts matches wgsl/ (run gen_shaders.ts after editing)", async () => {
  const current = await Deno.readTextFile(
    new URL("../../../kernels/webgpu/shaders.gen.ts", import.meta.url),
  );
  assert(
    current === await generateShaderModule(),
    "kernels/webgpu/shaders.gen.ts is stale: run " +
      "`deno run --allow-read --allow-write kernels/webgpu/gen_shaders.ts`",
  );
});

Deno.test("webgpu shaders: //#if, //#else, //#endif nest and take || alternatives", () => {
  const src = [
    "a",
    "//#if X || Y",
    "b",
    "//#if Z",
    "c",
    "//#else",
    "d",
    "//#endif",
    "//#endif",
    "e",
  ]
    .join("\n");
  assertEquals(preprocess(src, new Set(["Y"])), "a\nb\nd\ne");
  assertEquals(preprocess(src, new Set(["X", "Z"])), "a\nb\nc\ne");
  assertEquals(preprocess(src, new Set()), "a\ne");
  assertThrows(() => preprocess("//#if A\nx", new Set()), Error, "missing //#endif");
});

Deno.test("webgpu shaders: every op composes without leftover placeholders or directives", () => {
  const types = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
    .concat(["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]);
  const texts: string[] = [];
  for (const t of types) {
    texts.push(compose("matmul", { decode: t, subst: { TT: 8 } }));
    texts.push(
      compose("matmul", { decode: t, defines: ["SINGLE_LANE", "PACKED_DOT"], subst: { TT: 1 } }),
    );
    // The optional paths (features.ts): subgroup reductions, native half conversion.
    texts.push(compose("matmul", { decode: t, defines: ["SUBGROUPS"], subst: { TT: 8, SG: 32 } }));
    const f16 = compose("matmul", {
      decode: t,
      defines: ["F16_NATIVE"],
      subst: { TT: 1 },
      prelude: "enable f16;\n",
    });
    assert(f16.startsWith("enable f16;\n") && f16.includes("array<f16>"), "f16 variant");
    texts.push(f16);
    texts.push(compose("norm", { decode: t, defines: ["SUBGROUPS"], subst: { SG: 4 } }));
    for (const op of ["embed", "norm", "elementwise"]) texts.push(compose(op, { decode: t }));
    assert(!decodeSnippet(t, false).includes("fn acc_add"), `${t}: elem part has no dot`);
  }
  for (const bs of [1, 32, 256]) texts.push(compose("quantize", { subst: { BS: bs } }));
  for (const op of ["rope", "kv", "attention", "softmax"]) texts.push(compose(op));
  texts.push(compose("topk", { subst: { KMAX: 8 } }));
  texts.push(compose("topk", { defines: ["SUBGROUPS"], subst: { KMAX: 8, SG: 32 } }));
  for (const t of texts.slice(0, 2)) {
    assert(!t.includes("subgroupShuffle"), "fallback: no subgroups");
  }
  for (const t of texts) {
    assert(!/\{\{\w+\}\}|\/\/#(if|else|endif)|\/\/@(section|dot)/.test(t), t.slice(0, 200));
  }
});
