/** Where tests find the shared fixtures (../shared beside the repo, read-only in CI). */
import { fileURLToPath } from "node:url";

/** Root of the shared folder; override with DLLM_SHARED. */
export const SHARED = Deno.env.get("DLLM_SHARED") ??
  fileURLToPath(new URL("../../../shared", import.meta.url));
/** The repository root. */
export const REPO = fileURLToPath(new URL("../..", import.meta.url));
/** The bundled stories260K model, the tests' default. */
export const STORIES = `${REPO}/models/stories260K.gguf`;
/** llama.cpp golden fixtures. */
export const FIXTURES = `${SHARED}/fixtures`;

/** What a test run without the shared folder is told (once, before the file-not-found errors). */
export function missingSharedMessage(path: string): string {
  return `tests: the shared fixtures are not at ${path}; check out the shared folder as ../shared ` +
    `beside this repository, or set DLLM_SHARED=/path/to/shared`;
}

try {
  Deno.statSync(FIXTURES);
} catch {
  console.error(missingSharedMessage(SHARED));
}
