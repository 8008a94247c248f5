/**
 * Optional shader paths (`shader-f16`, `subgroups`) behind feature detection and the startup
 * self-check: the mode option and `DLLM_WEBGPU_FEATURES`, what the device was granted and the
 * report says, the self-check rejecting a path that does not compile or does not match, and —
 * where the adapter grants them — the paths passing their self-check. On llvmpipe (neither
 * feature) the f16 and subgroup shaders cannot run: the subgroup shaders are compile-validated
 * with the shuffles stubbed out, their butterfly order is run with every step in workgroup memory
 * (subgroup width 1), and the tests that need the features say that they were not exercised.
 */
import { GGMLType } from "../../../kernels/quant/mod.ts";
import {
  createWebGPUBackend,
  useShaderPaths,
  type WebGPUBackend,
} from "../../../kernels/webgpu/backend.ts";
import {
  compileErrors,
  FALLBACK_PATHS,
  featureMode,
  modeAllows,
  OPTIONAL_FEATURES,
  type ShaderPaths,
} from "../../../kernels/webgpu/features.ts";
import { maxDifference, selfCheck } from "../../../kernels/webgpu/selfcheck.ts";
import { WGSL_SOURCES } from "../../../kernels/webgpu/shaders.gen.ts";
import { compose } from "../../../kernels/webgpu/shaders.ts";
import { assert, assertEquals, assertThrows } from "../../support/assert.ts";
import { ignore, PROBE } from "./helpers.ts";

const offered = OPTIONAL_FEATURES.filter((f) => PROBE.features.includes(f));
const noF16 = ignore || !offered.includes("shader-f16");
const noSubgroups = ignore || !offered.includes("subgroups");
if (!ignore && (noF16 || noSubgroups)) {
  console.log(
    `${PROBE.description} offers ${
      offered.length ? offered.join(", ") : "neither shader-f16 nor subgroups"
    }: ` +
      `the ${[noF16 ? "f16" : "", noSubgroups ? "subgroup" : ""].filter((s) => s).join(" and ")} ` +
      "path(s) were NOT exercised here (their tests are ignored); run bench/gpu_device.sh on a GPU",
  );
}

/** A few weight types keep the self-check quick on a software adapter. */
const TYPES = [GGMLType.F32, GGMLType.F16, GGMLType.Q8_0, GGMLType.Q4_K];

/** A backend on a device created without optional features (so both candidates fail). */
async function plainBackend(): Promise<{ be: WebGPUBackend; dev: GPUDevice }> {
  const adapter = (await navigator.gpu.requestAdapter())!;
  const dev = await adapter.requestDevice({
    requiredLimits: { maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize },
  });
  // Shared lanes, so the decode matmul takes its reduction (the subgroup variant's place).
  return { be: await createWebGPUBackend({ adapter, device: dev, matmulLanes: "shared" }), dev };
}

/** The reduction shaders with every `subgroupShuffleXor(e, m)` replaced by `select(e, e, …)`. */
function stubShuffles(): () => void {
  const src = WGSL_SOURCES as Record<string, string>;
  const saved = { ...src };
  for (const name of ["matmul", "norm", "topk"]) {
    assert(src[name].includes("subgroupShuffleXor("), `${name}.wgsl has a subgroup variant`);
    src[name] = src[name].replace(
      /subgroupShuffleXor\(([^,()]+), (\w+)\)/g,
      "select($1, $1, $2 == 0u)",
    );
  }
  return () => Object.assign(src, saved);
}

Deno.test("webgpu features: the mode comes from the option, else DLLM_WEBGPU_FEATURES, else all", () => {
  const env = Deno.env.get("DLLM_WEBGPU_FEATURES");
  try {
    Deno.env.delete("DLLM_WEBGPU_FEATURES");
    assertEquals(featureMode(), "all");
    Deno.env.set("DLLM_WEBGPU_FEATURES", "none");
    assertEquals(featureMode(), "none");
    assertEquals(featureMode("f16"), "f16");
    Deno.env.set("DLLM_WEBGPU_FEATURES", "fast");
    assertThrows(() => featureMode(), RangeError, "DLLM_WEBGPU_FEATURES=fast");
  } finally {
    if (env === undefined) Deno.env.delete("DLLM_WEBGPU_FEATURES");
    else Deno.env.set("DLLM_WEBGPU_FEATURES", env);
  }
  assert(modeAllows("all", "subgroups") && modeAllows("f16", "shader-f16"));
  assert(!modeAllows("none", "shader-f16") && !modeAllows("f16", "subgroups"));
});

Deno.test({
  ignore,
  name: "webgpu features: granted features are recorded, and the report says which paths are on",
  fn: async () => {
    for (const mode of ["all", "none"] as const) {
      const be = await createWebGPUBackend({ features: mode });
      try {
        const r = be.info.shaderFeatures;
        assertEquals(r.mode, mode);
        assertEquals([...r.granted].sort(), [...offered].sort());
        assertEquals(r.outcomes.map((o) => o.feature), [...OPTIONAL_FEATURES]);
        for (const o of r.outcomes) {
          if (!offered.includes(o.feature)) assertEquals(o.state, "not offered");
          else if (mode === "none") assertEquals(o.state, "off");
        }
        if (mode === "none") assertEquals(r.active, []);
        for (const f of r.active) assert(be.info.using.includes(f), `${f} listed in use`);
        if (r.granted.length) assert(be.device.includes(r.outcomes[0].feature), be.device);
      } finally {
        be.dispose();
      }
    }
  },
});

Deno.test({
  ignore,
  name: "webgpu features: subgroup and f16 shaders compile-validate (shuffles stubbed out, the " +
    "f16 view of the weights read as f32)",
  fn: async () => {
    const { be, dev } = await plainBackend();
    const restore = stubShuffles();
    try {
      const shaders: [string, string][] = [];
      for (const sg of [4, 32, 64]) {
        const sgOpts = { defines: ["SUBGROUPS"], subst: { SG: sg } };
        for (const t of ["F32", "F16", "Q4_0", "Q8_0", "Q4_K", "Q6_K"]) {
          const kind = t.startsWith("F") ? "KIND_F" : t.endsWith("K") ? "KIND_Q8_K" : "KIND_Q8_0";
          shaders.push([
            `matmul ${t} SG ${sg}`,
            compose("matmul", {
              decode: t,
              defines: [...sgOpts.defines, kind],
              subst: { TT: 8, ...sgOpts.subst },
            }),
          ]);
        }
        shaders.push([`norm SG ${sg}`, compose("norm", { decode: "F32", ...sgOpts })]);
        shaders.push([
          `topk SG ${sg}`,
          compose("topk", { defines: sgOpts.defines, subst: { KMAX: 16, SG: sg } }),
        ]);
      }
      // This adapter cannot parse `enable f16;`: the f16 matmul without it, its `array<f16>`
      // as `array<f32>` (so only the f16 type itself goes unchecked).
      for (const t of ["F16", "Q4_0", "Q8_0", "Q4_K", "Q6_K"]) {
        // K-quants keep matmul.wgsl for prompts too (ops/matmul.ts).
        for (const file of t.endsWith("_K") ? ["matmul"] : ["matmul", "matmul_tiled"]) {
          const code = compose(file, {
            decode: t,
            defines: ["F16_NATIVE", t === "F16" ? "KIND_F" : "KIND_Q8_0"],
            subst: { TT: 8, KT: t === "F16" ? 256 : 1024 },
            prelude: "enable f16;\n",
          });
          assert(code.startsWith("enable f16;\n") && code.includes("array<f16>"), file);
          shaders.push([
            `${file} ${t} f16`,
            code.replace("enable f16;\n", "").replaceAll("array<f16>", "array<f32>"),
          ]);
        }
      }
      for (const [what, code] of shaders) {
        const err = await compileErrors(dev, code);
        assert(err === null, `${what}: ${err}`);
      }
    } finally {
      restore();
      be.dispose();
    }
  },
});

Deno.test({
  ignore,
  name: "webgpu self-check: a path that does not compile is not enabled; the backend goes on",
  fn: async () => {
    const { be, dev } = await plainBackend();
    try {
      const use = (p: ShaderPaths) => useShaderPaths(be, p);
      const sg = { ...FALLBACK_PATHS, subgroups: true, subgroupMinSize: 4 };
      for (const candidate of [sg, { ...FALLBACK_PATHS, f16: true }]) {
        const r = await selfCheck(be, dev, use, candidate, TYPES);
        assert(!r.ok, `${JSON.stringify(candidate)} passed on a device without the feature`);
        assert(r.detail.startsWith("does not compile or run"), r.detail);
      }
      // No error is left behind: the fallback checked against itself is still exact.
      const same = await selfCheck(be, dev, use, FALLBACK_PATHS, TYPES);
      assert(same.ok, same.detail);
      assert(same.detail.includes("largest difference 0"), same.detail);
    } finally {
      be.dispose();
    }
  },
});

Deno.test({
  ignore,
  name:
    "webgpu self-check: the subgroup variants' butterfly order equals the fallback bit for bit " +
    "(width 1: every step in workgroup memory); a wrong reduction is rejected",
  fn: async () => {
    const { be, dev } = await plainBackend();
    const restore = stubShuffles();
    try {
      const use = (p: ShaderPaths) => useShaderPaths(be, p);
      const width1 = { ...FALLBACK_PATHS, subgroups: true, subgroupMinSize: 1 };
      const r = await selfCheck(be, dev, use, width1, TYPES);
      assert(r.ok, r.detail);
      assert(r.detail.includes("largest difference 0"), r.detail);
      // Width 2 with the stub (a "shuffle" that returns the lane's own value) drops half of
      // every last step's sum: the self-check must see it.
      const wrong = await selfCheck(be, dev, use, { ...width1, subgroupMinSize: 2 }, TYPES);
      assert(!wrong.ok && wrong.detail.startsWith("differs from the fallback"), wrong.detail);
    } finally {
      restore();
      be.dispose();
    }
  },
});

Deno.test("webgpu self-check: outputs compare by their largest relative difference", () => {
  const a = [Float32Array.of(1, 200), Float32Array.of(0.5)];
  assertEquals(maxDifference(a, a), 0);
  assertEquals(maxDifference([Float32Array.of(1, 202), a[1]], a), 0.01);
  assertEquals(maxDifference([Float32Array.of(1, NaN), a[1]], a), Infinity);
  assertEquals(maxDifference([a[0]], a), Infinity);
});

Deno.test({
  ignore: noF16,
  name: "webgpu features: shader-f16 passes its self-check on this adapter",
  fn: async () => {
    const be = await createWebGPUBackend({ features: "f16" });
    try {
      const o = be.info.shaderFeatures.outcomes.find((o) => o.feature === "shader-f16")!;
      assertEquals(o.state, "enabled", `shader-f16: ${o.detail}`);
    } finally {
      be.dispose();
    }
  },
});

Deno.test({
  ignore: noSubgroups,
  name: "webgpu features: subgroups pass their self-check on this adapter",
  fn: async () => {
    const be = await createWebGPUBackend({ features: "subgroups" });
    try {
      const o = be.info.shaderFeatures.outcomes.find((o) => o.feature === "subgroups")!;
      assertEquals(o.state, "enabled", `subgroups: ${o.detail}`);
    } finally {
      be.dispose();
    }
  },
});
