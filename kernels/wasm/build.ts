/**
 * Build the AssemblyScript kernels (assembly/*.ts) into build/kernels.wasm.
 *
 * Run `deno task build:wasm` (`deno run -A kernels/wasm/build.ts`; add `--force` to rebuild even
 * when up to date); the test, bench and demo tasks run it first, and backend selection
 * (kernels/select.ts) calls {@link buildWasm} too, which rebuilds only when a source is newer
 * than the binary, so no binary is ever committed. `createWasmBackend` itself only loads the
 * binary ({@link readKernelBinary}).
 *
 * @example
 * ```ts
 * import { buildWasm } from "./build.ts";
 * const path = await buildWasm();
 * ```
 * @module
 */

const HERE = new URL(".", import.meta.url);
const SRC_DIR = new URL("assembly/", HERE);
const OUT_DIR = new URL("build/", HERE);
/** Where the compiled kernels land. */
export const WASM_URL: URL = new URL("kernels.wasm", OUT_DIR);

/** asc flags: SIMD + relaxed SIMD, stub runtime, imported shared memory up to 4 GiB. */
export const ASC_FLAGS: readonly string[] = [
  "--enable",
  "simd,relaxed-simd,threads",
  "--runtime",
  "stub",
  "--importMemory",
  "--sharedMemory",
  "--initialMemory",
  "1",
  "--maximumMemory",
  "65536",
  "-O3",
  "--noAssert",
];

async function mtime(url: URL): Promise<number> {
  try {
    return (await Deno.stat(url)).mtime?.getTime() ?? 0;
  } catch {
    return -1;
  }
}

async function upToDate(bin = WASM_URL, srcDir = SRC_DIR): Promise<boolean> {
  const out = await mtime(bin);
  if (out < 0) return false;
  for await (const e of Deno.readDir(srcDir)) {
    if (e.isFile && (await mtime(new URL(e.name, srcDir))) > out) return false;
  }
  return true;
}

/** Thrown when build/kernels.wasm is missing or older than its sources. */
export class KernelsNotBuiltError extends Error {
  override name = "KernelsNotBuiltError";
}

/**
 * The compiled kernels, or a KernelsNotBuiltError saying how to build them (`bin` and `srcDir`
 * are for tests).
 */
export async function readKernelBinary(
  bin: URL = WASM_URL,
  srcDir: URL = SRC_DIR,
): Promise<Uint8Array<ArrayBuffer>> {
  if (!(await upToDate(bin, srcDir))) {
    const why = (await mtime(bin)) < 0 ? "is missing" : "is older than its sources";
    throw new KernelsNotBuiltError(
      `the WASM kernels (${decodeURIComponent(bin.pathname)}) ${why}: ` +
        "run `deno task build:wasm`",
    );
  }
  return await Deno.readFile(bin);
}

/**
 * Compile the kernels unless build/kernels.wasm is newer than every source. Returns the path.
 * Runs asc through its JS API (`npm:assemblyscript@0.28.20/asc`).
 */
export async function buildWasm(opts: { force?: boolean } = {}): Promise<string> {
  const outPath = decodeURIComponent(WASM_URL.pathname);
  if (!opts.force && (await upToDate())) return outPath;
  await Deno.mkdir(OUT_DIR, { recursive: true });
  // Pinned in deno.json's imports (assemblyscript@0.28.20).
  const asc = await import("assemblyscript/asc");
  const entry = decodeURIComponent(new URL("index.ts", SRC_DIR).pathname);
  const tmp = outPath + `.${Deno.pid}.tmp`;
  let stderr = "";
  const { error } = await asc.main([entry, "-o", tmp, ...ASC_FLAGS], {
    stdout: { write: () => true },
    stderr: {
      write: (s: string | Uint8Array) => {
        stderr += typeof s === "string" ? s : new TextDecoder().decode(s);
        return true;
      },
    },
  });
  if (error) {
    await Deno.remove(tmp).catch(() => {});
    throw new Error(`AssemblyScript build of ${entry} failed: ${error.message}\n${stderr}`);
  }
  await Deno.rename(tmp, outPath);
  return outPath;
}

if (import.meta.main) {
  const path = await buildWasm({ force: Deno.args.includes("--force") });
  console.log(`built ${path}`);
}
