/**
 * llama.cpp built for the benches: ../shared/llamaref copied to bench/.cache/llamaref, its
 * node-llama-cpp prebuilt libraries installed, and llamaref-bench built on their C API (once each).
 * @module
 */
import { CACHE_DIR } from "./models.ts";
import { SHARED_LLAMAREF } from "./shared.ts";
import { exists } from "./files.ts";

const LLAMAREF_SRC = SHARED_LLAMAREF;
const LLAMAREF_DIR = `${CACHE_DIR}llamaref/`;
/** The llamaref-bench binary (../shared/llamaref/native/bench.cpp). */
export const LLAMAREF_BENCH = `${LLAMAREF_DIR}native/build/llamaref-bench`;

/** Run `cmd`, its stdout; a failure throws with the end of its stderr. */
export async function run(cmd: string, args: string[], cwd?: string): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    const err = new TextDecoder().decode(out.stderr).slice(-2000);
    throw new Error(`${cmd} ${args.join(" ")} failed (${out.code}):\n${err}`);
  }
  return text;
}

/**
 * Copy ../shared/llamaref to bench/.cache/llamaref, `npm ci` there and build llamaref-bench
 * (once each). Returns the folder.
 */
export async function ensureLlamaRef(): Promise<string> {
  const dir = LLAMAREF_DIR;
  if (!(await exists(`${dir}node_modules/node-llama-cpp/package.json`))) {
    if (!(await exists(LLAMAREF_SRC))) {
      throw new Error(`${LLAMAREF_SRC} is missing: ../shared must sit beside the checkout`);
    }
    await Deno.mkdir(CACHE_DIR, { recursive: true });
    await run("cp", ["-r", LLAMAREF_SRC.replace(/\/$/, ""), CACHE_DIR]);
    await run("chmod", ["-R", "u+w", dir]);
    console.error("bench: installing node-llama-cpp 3.21.1 into bench/.cache/llamaref (npm ci)…");
    await run("npm", ["ci", "--no-audit", "--no-fund"], dir);
  }
  if (!(await exists(LLAMAREF_BENCH))) {
    console.error("bench: building llamaref-bench on llama.cpp's C API (sh native/build.sh)…");
    await run("sh", ["native/build.sh"], dir);
  }
  return dir;
}
