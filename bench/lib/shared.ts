/** Where the benches find ../shared (llamaref, fixtures): DLLM_SHARED, as for the tests. */
import { fileURLToPath } from "node:url";

/** Root of the shared folder (no trailing slash); override with DLLM_SHARED. */
export const SHARED: string = Deno.env.get("DLLM_SHARED") ??
  fileURLToPath(new URL("../../../shared", import.meta.url));
/** llama.cpp's reference scripts (make-gguf.mjs, ref.mjs, native/). */
export const SHARED_LLAMAREF = `${SHARED}/llamaref/`;
/** The llama.cpp goldens, vocabularies and their checker. */
export const SHARED_FIXTURES = `${SHARED}/fixtures/`;
