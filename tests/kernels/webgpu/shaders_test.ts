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
    for (const op of ["embed", "norm", "elementwise"]) texts.push(compose(op, { decode: t }));
    assert(!decodeSnippet(t, false).includes("fn acc_add"), `${t}: elem part has no dot`);
  }
  for (const bs of [1, 32, 256]) texts.push(compose("quantize", { subst: { BS: bs } }));
  for (const op of ["rope", "kv", "attention", "softmax"]) texts.push(compose(op));
  for (const t of texts) {
    assert(!/\{\{\w+\}\}|\/\/#(if|else|endif)|\/\/@(section|dot)/.test(t), t.slice(0, 200));
  }
});
