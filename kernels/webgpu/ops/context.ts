/**
 * What every op's dispatch function works with: the device's buffers, the encoder, the adapter
 * options in effect, and the small helpers for sizing dispatches.
 *
 * @module
 */
import type { Encoder } from "../encoder.ts";
import type { ShaderPaths } from "../features.ts";
import type { GpuResources } from "../resources.ts";
import type { WebGPUInfo } from "../types.ts";
import type { ConvertedActivations } from "./converted.ts";

/** Invocations per workgroup in every shader. */
export const WG = 64;

/** The backend state an op records its dispatches with. */
export interface OpContext {
  readonly gpu: GpuResources;
  readonly enc: Encoder;
  /** Switched with the paths (the self-check turns `cpuKernels` on and off). */
  info: WebGPUInfo;
  /** `//#if` names every shader is composed with: PACKED_DOT when `dot4I8Packed` is in use. */
  readonly defines: readonly string[];
  /** The last conversion of activations to each vec_dot type (ops/quantize.ts). */
  readonly converted: ConvertedActivations;
  /**
   * The optional shader paths in effect (features.ts); set once the self-check has run, and
   * switched by it while it compares a path against the fallback.
   */
  paths: ShaderPaths;
}

/**
 * What a reduction shader is composed with on the subgroup path: the `SUBGROUPS` define, the
 * `{{SG}}` width, the prelude and a pipeline-key suffix; nothing on the fallback path.
 */
export function subgroupVariant(p: ShaderPaths): {
  defines: string[];
  subst: Record<string, number>;
  prelude: string;
  key: string;
} {
  if (!p.subgroups) return { defines: [], subst: {}, prelude: "", key: "" };
  return {
    defines: ["SUBGROUPS"],
    subst: { SG: p.subgroupMinSize },
    prelude: p.subgroupEnable,
    key: `:sg${p.subgroupMinSize}`,
  };
}

/** Split a 1-D workgroup count over x and y (each ≤ 65535). */
export function grid(n: number): [number, number] {
  if (n <= 65535) return [Math.max(1, n), 1];
  return [65535, Math.ceil(n / 65535)];
}
