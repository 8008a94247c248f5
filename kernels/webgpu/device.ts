/**
 * Adapter discovery: what `navigator.gpu` offers on this machine, so that `kernels/select.ts`
 * can prefer WASM on a software (fallback) adapter such as Mesa's llvmpipe and say why.
 *
 * @module
 */
import { WebGPUUnavailableError } from "./errors.ts";

/** What one adapter is and offers. */
export interface AdapterProbe {
  /** Whether an adapter was found at all. */
  readonly available: boolean;
  /** Human description, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)" or "NVIDIA H200 (vulkan)". */
  readonly description: string;
  /** True for software adapters (llvmpipe, SwiftShader, WARP): slower than the WASM backend. */
  readonly isFallback: boolean;
  readonly vendor: string;
  readonly architecture: string;
  /** Optional features the adapter offers (e.g. "shader-f16", "subgroups", "timestamp-query"). */
  readonly features: readonly string[];
  /** WGSL language extensions (e.g. "packed_4x8_integer_dot_product"). */
  readonly wgslFeatures: readonly string[];
  /** The adapter's limits, by name. */
  readonly limits: Readonly<Record<string, number>>;
  /** Why `available` is false. */
  readonly reason?: string;
}

/** Find an adapter, or say why there is none. Never throws. */
export async function requestAdapter(
  powerPreference: GPUPowerPreference = "high-performance",
): Promise<{ adapter: GPUAdapter | null; reason?: string }> {
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) return { adapter: null, reason: "navigator.gpu is not available in this runtime" };
  try {
    const adapter = await gpu.requestAdapter({ powerPreference });
    if (!adapter) {
      return {
        adapter: null,
        reason: "navigator.gpu.requestAdapter() returned null (no Vulkan/Metal/D3D12 driver found)",
      };
    }
    return { adapter };
  } catch (e) {
    return { adapter: null, reason: `requestAdapter failed: ${(e as Error).message}` };
  }
}

/** `navigator.gpu.wgslLanguageFeatures` (missing from Deno's GPU type declarations). */
function wgslLanguageFeatures(): Iterable<string> {
  const gpu = navigator.gpu as unknown as { wgslLanguageFeatures?: Iterable<string> } | undefined;
  return gpu?.wgslLanguageFeatures ?? [];
}

/** Describe an adapter. */
export function describeAdapter(adapter: GPUAdapter): AdapterProbe {
  const info = adapter.info;
  const limits: Record<string, number> = {};
  for (const key in adapter.limits) {
    const v = (adapter.limits as unknown as Record<string, unknown>)[key];
    if (typeof v === "number") limits[key] = v;
  }
  const description = info.description ||
    [info.vendor, info.architecture, info.device].filter((s) => s).join(" ") || "unknown adapter";
  return {
    available: true,
    description,
    isFallback: info.isFallbackAdapter ?? false,
    vendor: info.vendor,
    architecture: info.architecture,
    features: [...adapter.features].sort(),
    wgslFeatures: [...wgslLanguageFeatures()].sort(),
    limits,
  };
}

/**
 * Probe the default adapter.
 *
 * @example
 * ```ts
 * const p = await probeAdapter();
 * if (!p.available || p.isFallback) console.log(`using WASM: ${p.reason ?? p.description}`);
 * ```
 */
export async function probeAdapter(
  powerPreference: GPUPowerPreference = "high-performance",
): Promise<AdapterProbe> {
  const { adapter, reason } = await requestAdapter(powerPreference);
  if (!adapter) {
    return {
      available: false,
      description: "none",
      isFallback: false,
      vendor: "",
      architecture: "",
      features: [],
      wgslFeatures: [],
      limits: {},
      reason,
    };
  }
  return describeAdapter(adapter);
}

/**
 * Request a device with the adapter's buffer-size limits (the defaults are much lower) and the
 * optional `features` the adapter offers (the rest are left out, never an error).
 */
export async function requestDevice(
  adapter: GPUAdapter,
  features: readonly string[] = [],
): Promise<GPUDevice> {
  const want = [
    "maxStorageBufferBindingSize",
    "maxBufferSize",
    "maxStorageBuffersPerShaderStage",
    "maxComputeWorkgroupStorageSize",
  ] as const;
  const requiredLimits: Record<string, number> = {};
  for (const k of want) requiredLimits[k] = adapter.limits[k];
  try {
    const requiredFeatures = features.filter((f) =>
      adapter.features.has(f as GPUFeatureName)
    ) as GPUFeatureName[];
    return await adapter.requestDevice({ requiredLimits, requiredFeatures });
  } catch (e) {
    throw new WebGPUUnavailableError(
      `requestDevice on "${adapter.info.description}" failed: ${(e as Error).message}`,
      { cause: e },
    );
  }
}
