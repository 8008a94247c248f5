/** File-URL helpers (JSR's @std/path is not reachable, and node:url works the same in Deno). */
import { fileURLToPath } from "node:url";

/** Convert a file: URL to a platform path. */
export function fromFileUrl(url: URL): string {
  return fileURLToPath(url);
}
