/**
 * The code's shape, as issue 18 set it: no file under cluster/ or kernels/ over 600 lines (the
 * AssemblyScript kernels and WGSL aside), and no circle of value imports among the project's own
 * modules (a type-only import leaves nothing at run time, so it closes none).
 */
import { assertEquals } from "./support/assert.ts";

const ROOT = new URL("../", import.meta.url);

/** Every .ts file under `dir` (relative to the repository), recursively. */
async function tsFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(new URL(dir, ROOT))) {
    const path = `${dir}/${e.name}`;
    if (e.isDirectory) out.push(...await tsFiles(path));
    else if (e.isFile && e.name.endsWith(".ts")) out.push(path);
  }
  return out;
}

Deno.test("no file under cluster/ or kernels/ over 600 lines (AssemblyScript and WGSL aside)", async () => {
  const long: string[] = [];
  for (const dir of ["cluster", "kernels"]) {
    for (const f of await tsFiles(dir)) {
      if (f.startsWith("kernels/wasm/assembly/")) continue;
      const lines = (await Deno.readTextFile(new URL(f, ROOT))).split("\n").length - 1;
      if (lines > 600) long.push(`${f}: ${lines} lines`);
    }
  }
  assertEquals(long, []);
});

Deno.test("no circle of value imports among cli/, cluster/, kernels/, model/ and proto/", async () => {
  const files = new Set<string>();
  for (const dir of ["cli", "cluster", "kernels", "model", "proto"]) {
    for (const f of await tsFiles(dir)) {
      if (!f.startsWith("kernels/wasm/assembly/")) files.add(f);
    }
  }
  // value imports and re-exports of relative modules (`import type` / `export type` skipped)
  const spec = /^\s*(?:import|export)\s+(?!type\b)[^;]*?\bfrom\s+"(\.{1,2}\/[^"]+)"/gm;
  const edges = new Map<string, string[]>();
  for (const f of files) {
    const text = await Deno.readTextFile(new URL(f, ROOT));
    const to: string[] = [];
    for (const m of text.matchAll(spec)) {
      const target = new URL(m[1], new URL(f, ROOT)).pathname.slice(ROOT.pathname.length);
      if (files.has(target)) to.push(target);
    }
    edges.set(f, to);
  }
  // depth-first search for a back edge; the first circle found is reported whole
  const state = new Map<string, 1 | 2>();
  const stack: string[] = [];
  let circle: string[] = [];
  const visit = (f: string): boolean => {
    state.set(f, 1);
    stack.push(f);
    for (const t of edges.get(f) ?? []) {
      if (state.get(t) === 1) {
        circle = [...stack.slice(stack.indexOf(t)), t];
        return true;
      }
      if (!state.has(t) && visit(t)) return true;
    }
    stack.pop();
    state.set(f, 2);
    return false;
  };
  for (const f of files) if (!state.has(f) && visit(f)) break;
  assertEquals(circle, []);
});
