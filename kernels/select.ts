/**
 * Backend selection: `--backend auto|wasm|webgpu|reference`.
 *
 * auto prefers WebGPU on a real (non-fallback) adapter, and otherwise the WASM SIMD backend;
 * the plain-TypeScript reference backend is the ground truth for tests and the last resort.
 */
import type { Backend } from "./backend.ts";
import { createReferenceBackend } from "./reference/mod.ts";

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
  _opts: SelectOptions = {},
): Promise<Selection> {
  switch (name) {
    case "reference":
      return { backend: createReferenceBackend(), reason: "requested with --backend reference" };
    case "auto":
      return {
        backend: createReferenceBackend(),
        reason: "auto: only the reference backend is built in this version",
      };
    default:
      throw new BackendUnavailableError(
        `backend "${name}" is not available in this build; use --backend reference`,
      );
  }
}
