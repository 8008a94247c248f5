/** Loading the compiled kernels: a missing or stale binary is a clear error, not a rebuild. */
import {
  KernelsNotBuiltError,
  readKernelBinary,
  stampKernelBinary,
  WASM_URL,
} from "../../../kernels/wasm/build.ts";
import { assert, assertEquals, assertRejects } from "../../support/assert.ts";

Deno.test("wasm kernels: a missing binary names the build task", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const src = new URL(`file://${dir}/src/`);
    await Deno.mkdir(src);
    await Deno.writeTextFile(new URL("index.ts", src), "// kernels");
    const e = await assertRejects(
      () => readKernelBinary(new URL(`file://${dir}/kernels.wasm`), src),
      KernelsNotBuiltError,
    );
    assert(e.message.includes("is missing"), e.message);
    assert(e.message.includes("deno task build:wasm"), e.message);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("wasm kernels: a binary built from other sources is refused, whatever its time", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const src = new URL(`file://${dir}/src/`);
    const bin = new URL(`file://${dir}/kernels.wasm`);
    await Deno.mkdir(src);
    await Deno.writeFile(bin, new Uint8Array([0, 97, 115, 109]));
    await Deno.writeTextFile(new URL("index.ts", src), "// kernels");
    // no stamp: not known to come from these sources
    let e = await assertRejects(() => readKernelBinary(bin, src), KernelsNotBuiltError);
    assert(e.message.includes("built from other sources"), e.message);
    await stampKernelBinary(bin, src);
    // a copied tree whose sources look newer (another machine's clock) keeps its binary
    await Deno.utime(bin, 1000, 1000);
    assertEquals([...await readKernelBinary(bin, src)], [0, 97, 115, 109]);
    // a changed source is refused even when the binary looks newer
    await Deno.writeTextFile(new URL("index.ts", src), "// kernels, changed");
    await Deno.utime(bin, Date.now() / 1000 + 10, Date.now() / 1000 + 10);
    e = await assertRejects(() => readKernelBinary(bin, src), KernelsNotBuiltError);
    assert(e.message.includes("deno task build:wasm"), e.message);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("wasm kernels: the built binary loads (deno task test builds it first)", async () => {
  const bytes = await readKernelBinary();
  assert(WebAssembly.validate(bytes), `${WASM_URL} is not a valid module`);
});
