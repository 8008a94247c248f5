/**
 * Build the AssemblyScript kernels (assembly/*.ts) into build/kernels.wasm.
 *
 * Run `deno task build:wasm` (`deno run -A kernels/wasm/build.ts`; add `--force` to rebuild even
 * when up to date); the test, bench and demo tasks run it first, and backend selection
 * (kernels/select.ts) calls {@link buildWasm} too, which rebuilds only when the sources differ
 * from those the binary was built from, so no binary is ever committed. `createWasmBackend` itself only loads the
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

/** The stamp beside a binary: the digest of the sources and flags it was built from. */
function stampOf(bin: URL): URL {
  return new URL(`${bin.href}.sources`);
}

/**
 * SHA-256 of the compiler flags and every source file (name and bytes, in name order). Content,
 * not modification times: a copied or re-checked-out tree keeps its binary exactly when the
 * sources are the same, whatever the clocks of the machines it passed through.
 */
async function sourceDigest(srcDir: URL): Promise<string> {
  const names: string[] = [];
  for await (const e of Deno.readDir(srcDir)) if (e.isFile) names.push(e.name);
  names.sort();
  const enc = new TextEncoder();
  const parts: Uint8Array[] = [enc.encode(ASC_FLAGS.join(" ") + "\n")];
  for (const n of names) {
    parts.push(enc.encode(`${n}\n`), await Deno.readFile(new URL(n, srcDir)), enc.encode("\n"));
  }
  const all = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) all.set(p, o), o += p.length;
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", all));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function exists(url: URL): Promise<boolean> {
  try {
    await Deno.stat(url);
    return true;
  } catch {
    return false;
  }
}

async function upToDate(bin = WASM_URL, srcDir = SRC_DIR): Promise<boolean> {
  if (!(await exists(bin))) return false;
  const stamp = await Deno.readTextFile(stampOf(bin)).catch(() => "");
  return stamp.trim() === await sourceDigest(srcDir);
}

/**
 * Record that `bin` was built from the sources whose digest is `digest` (default: those now in
 * `srcDir`; tests pass both). Written whole and renamed, so a process starting meanwhile never
 * reads half a stamp.
 */
export async function stampKernelBinary(
  bin: URL = WASM_URL,
  srcDir: URL = SRC_DIR,
  digest?: string,
): Promise<void> {
  const path = decodeURIComponent(stampOf(bin).pathname);
  const tmp = `${path}.${Deno.pid}.tmp`;
  await Deno.writeTextFile(tmp, (digest ?? await sourceDigest(srcDir)) + "\n");
  await Deno.rename(tmp, path);
}

/** Thrown when build/kernels.wasm is missing or was not built from the sources now there. */
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
    const why = (await exists(bin))
      ? "was built from other sources than those now in the tree"
      : "is missing";
    throw new KernelsNotBuiltError(
      `the WASM kernels (${decodeURIComponent(bin.pathname)}) ${why}: ` +
        "run `deno task build:wasm`",
    );
  }
  return await Deno.readFile(bin);
}

/**
 * Compile the kernels unless build/kernels.wasm was built from the sources now there (its
 * `.sources` stamp holds their digest). Returns the path.
 * Runs asc through its JS API (`npm:assemblyscript@0.28.20/asc`).
 */
export async function buildWasm(opts: { force?: boolean } = {}): Promise<string> {
  const outPath = decodeURIComponent(WASM_URL.pathname);
  if (!opts.force && (await upToDate())) return outPath;
  await Deno.mkdir(OUT_DIR, { recursive: true });
  // Pinned in deno.json's imports (assemblyscript@0.28.20).
  const asc = await import("assemblyscript/asc");
  // The digest of the sources compiled, taken before: a source edited while asc runs must
  // leave the binary stale, not stamped as built from the edit.
  const digest = await sourceDigest(SRC_DIR);
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
  await stampKernelBinary(WASM_URL, SRC_DIR, digest);
  return outPath;
}

if (import.meta.main) {
  const path = await buildWasm({ force: Deno.args.includes("--force") });
  // stderr: `deno task bench` builds first, and its stdout is the benchmark's JSON
  console.error(`built ${path}`);
}
