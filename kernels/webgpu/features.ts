/**
 * Optional shader features: `shader-f16` (native half conversion in the matmul shaders) and
 * `subgroups` (shuffle reductions in the decode matmul, RMSNorm and top-k). The backend asks for
 * them when the adapter offers them, and uses each one only after the startup self-check
 * (selfcheck.ts) has matched it against the f32/workgroup-memory path, which stays the reference
 * and the default. `DLLM_WEBGPU_FEATURES` (or the `features` option) narrows what may be used.
 *
 * @module
 */

/** Which optional shader paths may be used (after their self-check): the option's values. */
export type FeatureMode = "none" | "f16" | "subgroups" | "all";

const MODES: readonly FeatureMode[] = ["none", "f16", "subgroups", "all"];

/** The optional adapter features the backend asks for when offered. */
export const OPTIONAL_FEATURES = ["shader-f16", "subgroups"] as const;

/** The shader paths in effect: what every op composes its shaders with. */
export interface ShaderPaths {
  /** matmul shaders convert half bits with the hardware (`enable f16;`), arithmetic in f32. */
  readonly f16: boolean;
  /** Reductions take their last steps with `subgroupShuffleXor` instead of workgroup memory. */
  readonly subgroups: boolean;
  /**
   * The adapter's smallest subgroup (`adapter.info.subgroupMinSize`): reduction steps narrower
   * than this use shuffles, wider ones workgroup memory.
   */
  readonly subgroupMinSize: number;
  /** What subgroup shaders start with: "" on Naga (Deno), which rejects `enable subgroups;`. */
  readonly subgroupEnable: string;
}

/** The reference paths: f32 arithmetic, integer half decoding, workgroup-memory reductions. */
export const FALLBACK_PATHS: ShaderPaths = {
  f16: false,
  subgroups: false,
  subgroupMinSize: 0,
  subgroupEnable: "",
};

/** What happened to one optional feature at startup. */
export interface FeatureOutcome {
  readonly feature: "shader-f16" | "subgroups";
  /** "enabled", "not offered" by the adapter, "off" by the mode, or "failed" its self-check. */
  readonly state: "enabled" | "not offered" | "off" | "failed";
  /** Why, in words (the self-check's largest difference, or the compile error). */
  readonly detail: string;
}

/** What the backend found, asked for and uses; `backend.info.shaderFeatures`. */
export interface ShaderFeatureReport {
  /** The `DLLM_WEBGPU_FEATURES` / option value in effect. */
  readonly mode: FeatureMode;
  /** Optional features of {@link OPTIONAL_FEATURES} the device was created with. */
  readonly granted: readonly string[];
  /** The ones in use (granted, allowed by the mode, self-check passed). */
  readonly active: readonly string[];
  readonly outcomes: readonly FeatureOutcome[];
}

/** The mode from the option, else `DLLM_WEBGPU_FEATURES`, else "all"; throws on other values. */
export function featureMode(option?: FeatureMode): FeatureMode {
  let v: string | undefined = option;
  if (v === undefined) {
    try {
      v = Deno.env.get("DLLM_WEBGPU_FEATURES") || undefined;
    } catch {
      v = undefined; // no env permission: the default
    }
  }
  v ??= "all";
  if (!(MODES as readonly string[]).includes(v)) {
    throw new RangeError(`DLLM_WEBGPU_FEATURES=${v}: expected one of ${MODES.join(", ")}`);
  }
  return v as FeatureMode;
}

/** Whether `mode` allows `feature`. */
export function modeAllows(mode: FeatureMode, feature: FeatureOutcome["feature"]): boolean {
  return mode === "all" || (mode === "f16" ? feature === "shader-f16" : mode === feature);
}

/** One line for logs and `backend.device`, e.g. "shader-f16 enabled, subgroups failed (…)". */
export function describeFeatures(r: ShaderFeatureReport): string {
  return r.outcomes.map((o) => `${o.feature} ${o.state}${o.detail ? ` (${o.detail})` : ""}`)
    .join(", ");
}

/**
 * The first of `enable subgroups;` or nothing under which a shader using subgroup builtins
 * compiles on `dev` (Dawn requires the directive, Naga rejects it), or null when neither does.
 */
export async function subgroupPrelude(dev: GPUDevice): Promise<string | null> {
  const body = "@group(0) @binding(0) var<storage, read_write> O: array<f32>;\n" +
    "@compute @workgroup_size(64)\n" +
    "fn main(@builtin(local_invocation_index) li: u32) {\n" +
    "  O[li] = subgroupShuffleXor(O[li], 1u);\n}\n";
  for (const prelude of ["", "enable subgroups;\n"]) {
    if ((await compileErrors(dev, prelude + body)) === null) return prelude;
  }
  return null;
}

/** The compile errors of `code` on `dev` (null when it compiles), without raising them. */
export async function compileErrors(dev: GPUDevice, code: string): Promise<string | null> {
  dev.pushErrorScope("validation");
  const module = dev.createShaderModule({ code });
  const info = await module.getCompilationInfo();
  const err = await dev.popErrorScope();
  const msgs = info.messages.filter((m) => m.type === "error").map((m) => m.message.trim());
  if (err) msgs.push(err.message.trim());
  return msgs.length ? msgs.join("; ") : null;
}
