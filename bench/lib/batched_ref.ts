/**
 * llama.cpp's continuous-batching decode as a reference: `llamaref-batched` (bench/native/batched.cpp)
 * built on the same C API and prebuilt libraries as llamaref-bench, and one timed run of it.
 * Used by `bench batch` (in process, ours against it) and `bench api` (served, ours against it).
 * @module
 */
import { ensureLlamaRef } from "./llamaref.ts";

/** Build bench/native/batched.cpp beside llamaref-bench (again when the source is newer). */
export async function ensureBatchedRef(): Promise<string> {
  const dir = await ensureLlamaRef();
  const src = new URL("../native/batched.cpp", import.meta.url).pathname;
  const out = `${dir}native/build/llamaref-batched`;
  const mtime = (p: string) => {
    try {
      return Deno.statSync(p).mtime?.getTime() ?? 0;
    } catch {
      return -1;
    }
  };
  if (mtime(out) >= mtime(src)) return out;
  const bins = `${dir}node_modules/@node-llama-cpp/linux-x64/bins/linux-x64`;
  const lib = (prefix: string) => {
    const f = [...Deno.readDirSync(bins)].find((e) =>
      e.name.startsWith(prefix) && e.name.endsWith(".so")
    );
    if (!f) throw new Error(`no ${prefix}*.so in ${bins}`);
    return `${bins}/${f.name}`;
  };
  console.error(
    "bench: building llamaref-batched on llama.cpp's C API (bench/native/batched.cpp)…",
  );
  const hdr = `${dir}native/build/hdr`;
  const r = await new Deno.Command("g++", {
    args: [
      "-O2",
      "-std=c++17",
      `-I${hdr}/include`,
      `-I${hdr}/ggml/include`,
      src,
      lib("libllama.v"),
      lib("libggml.v"),
      `${bins}/libggml-base.so`,
      "-Wl,-rpath,$ORIGIN/../../node_modules/@node-llama-cpp/linux-x64/bins/linux-x64",
      "-o",
      out,
    ],
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!r.success) throw new Error(`building ${out} failed (g++ exit ${r.code})`);
  return out;
}

/** llama.cpp's decode tokens/s per N (`o.seqs`): one timed rep of llamaref-batched. */
export async function refBatchedDecode(
  bin: string,
  model: string,
  o: { seqs: number[]; prompt: number; tg: number; threads: number },
): Promise<Map<number, number>> {
  const r = await new Deno.Command(bin, {
    args: [
      "--model",
      model,
      "--seqs",
      o.seqs.join(","),
      "--prompt",
      String(o.prompt),
      "--tg",
      String(o.tg),
      "--threads",
      String(o.threads),
      "--reps",
      "1",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(r.stdout);
  if (!r.success) {
    throw new Error(
      `${bin} failed (${r.code}): ${new TextDecoder().decode(r.stderr).slice(-2000)}`,
    );
  }
  const j = JSON.parse(text.slice(text.indexOf("{"))) as { runs: Record<string, number[]> };
  return new Map(o.seqs.map((n) => [n, j.runs[String(n)][0]]));
}
