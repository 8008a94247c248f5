/**
 * Backend selection: `--backend auto|wasm|webgpu|reference`.
 *
 * auto prefers WebGPU on a real (non-fallback) adapter, and otherwise the WASM SIMD backend;
 * the plain-TypeScript reference backend is the ground truth for tests and the last resort.
 */
import type { Backend } from "./backend.ts";
import { createReferenceBackend } from "./reference/mod.ts";
import { buildWasm, createWasmBackend, type WasmBackend } from "./wasm/mod.ts";
import { createWebGPUBackend, probeAdapter } from "./webgpu/mod.ts";

/** Names accepted by `--backend`. */
export const BACKEND_NAMES = ["auto", "wasm", "webgpu", "reference"] as const;
/** One of BACKEND_NAMES. */
export type BackendName = typeof BACKEND_NAMES[number];

/** Options for building a backend. */
export interface SelectOptions {
  /** Worker threads for the CPU backend; default: all cores. */
  threads?: number;
}

/** The backend that was built, and why it was chosen (shown in logs and node listings). */
export interface Selection {
  backend: Backend;
  reason: string;
}

/** Thrown when a requested backend cannot be built; the message says what to use instead. */
export class BackendUnavailableError extends Error {
  override name = "BackendUnavailableError";
}

/** Check a user-supplied backend name. */
export function parseBackendName(name: string): BackendName {
  if ((BACKEND_NAMES as readonly string[]).includes(name)) return name as BackendName;
  throw new BackendUnavailableError(
    `unknown backend "${name}" (choose one of: ${BACKEND_NAMES.join(", ")})`,
  );
}

/** Build the requested backend (or pick one for `auto`). */
export async function selectBackend(
  name: BackendName = "auto",
  opts: SelectOptions = {},
): Promise<Selection> {
  switch (name) {
    case "reference":
      return { backend: createReferenceBackend(), reason: "requested with --backend reference" };
    case "wasm":
      return {
        backend: await wasmBackend(opts.threads),
        reason: "requested with --backend wasm",
      };
    case "webgpu": {
      const probe = await probeAdapter();
      if (!probe.available) {
        throw new BackendUnavailableError(
          `--backend webgpu: no WebGPU adapter (${
            probe.reason ?? "navigator.gpu found none"
          }); use --backend wasm`,
        );
      }
      return {
        backend: await createWebGPUBackend(),
        reason: `requested with --backend webgpu (${probe.description}${
          probe.isFallback ? ", a software fallback adapter" : ""
        })`,
      };
    }
    case "auto": {
      const probe = await probeAdapter();
      if (probe.available && !probe.isFallback) {
        try {
          return {
            backend: await createWebGPUBackend(),
            reason: `auto: WebGPU on ${probe.description} (a hardware adapter)`,
          };
        } catch (e) {
          return {
            backend: await wasmBackend(opts.threads),
            reason: `auto: WebGPU on ${probe.description} failed to start (${
              (e as Error).message
            }); WASM instead`,
          };
        }
      }
      const why = probe.available
        ? `the only WebGPU adapter is a software fallback (${probe.description}), which is slower than WASM SIMD`
        : `no WebGPU adapter (${probe.reason ?? "none found"})`;
      return {
        backend: await wasmBackend(opts.threads),
        reason: `auto: WASM SIMD — ${why}`,
      };
    }
  }
}

/** The WASM backend, its kernels compiled first when missing or stale (a no-op otherwise). */
async function wasmBackend(threads?: number): Promise<WasmBackend> {
  await buildWasm();
  return await createWasmBackend({ threads });
}
