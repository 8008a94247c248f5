/**
 * Opening a model file with errors that name it. The generation engine (a head over a chain of
 * one in-process stage, the same path an agent runs) is `Engine` in cluster/pipeline/engine.ts.
 */
import { GGUFError, type GGUFFile, openGGUF } from "./gguf/mod.ts";

/**
 * Open a GGUF file for reading, with errors that name the file: a missing file says so plainly,
 * and parse errors keep their field and offset but gain the path.
 */
export async function openModelFile(path: string): Promise<GGUFFile> {
  try {
    return await openGGUF(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      // No flag named: the path came from --model, a positional argument (models inspect) or
      // an agent's config, and a hint naming one flag misled the others.
      throw new Error(`model file not found: ${path}`);
    }
    if (e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.IsADirectory) {
      throw new Error(`cannot read model file ${path}: ${(e as Error).message}`);
    }
    if (e instanceof GGUFError) e.message = `${path}: ${e.message}`;
    throw e;
  }
}
