/**
 * Child of tests/model/gguf/retention_test.ts (run with --v8-flags=--expose-gc): reads one
 * tensor of a GGUF file, drops it, collects garbage and prints whether its bytes were freed.
 */
import { openGGUF } from "../../model/gguf/mod.ts";

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with --v8-flags=--expose-gc");
const file = await openGGUF(Deno.args[0]);
const biggest = [...file.tensors].sort((a, b) => (b.nBytes ?? 0) - (a.nBytes ?? 0))[0];
// In a function of its own: a suspended async frame would keep its locals (the bytes) alive.
async function readAndDrop(): Promise<WeakRef<ArrayBufferLike>> {
  const bytes = await file.readTensor(biggest);
  return new WeakRef(bytes.buffer);
}
const ref = await readAndDrop();
// WeakRef targets live until the current job ends; collect in a later task.
await new Promise((r) => setTimeout(r, 0));
gc();
await new Promise((r) => setTimeout(r, 0));
gc();
console.log(JSON.stringify({ tensor: biggest.name, bytes: biggest.nBytes, freed: !ref.deref() }));
file.close();
