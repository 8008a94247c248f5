/** Backend selection: names, and auto's choice with its reason on this machine's adapter. */
import { BackendUnavailableError, parseBackendName, selectBackend } from "../../kernels/select.ts";
import { probeAdapter } from "../../kernels/webgpu/mod.ts";
import { assert, assertEquals, assertThrows } from "../support/assert.ts";

Deno.test("unknown backend names are refused with the list of choices", () => {
  assertThrows(
    () => parseBackendName("cuda"),
    BackendUnavailableError,
    "auto, wasm, webgpu, reference",
  );
  assertEquals(parseBackendName("wasm"), "wasm");
});

Deno.test("auto prefers WebGPU only on a hardware adapter, and says why it chose WASM", async () => {
  const probe = await probeAdapter();
  const { backend, reason } = await selectBackend("auto", { threads: 1 });
  try {
    if (probe.available && !probe.isFallback) {
      assertEquals(backend.name, "webgpu");
    } else {
      assertEquals(backend.name, "wasm");
      const why = probe.available ? "software fallback" : "no WebGPU adapter";
      assert(reason.includes(why), reason);
    }
  } finally {
    backend.dispose();
  }
});

Deno.test("each named backend starts (webgpu only where an adapter exists)", async () => {
  const probe = await probeAdapter();
  for (const name of ["reference", "wasm", "webgpu"] as const) {
    if (name === "webgpu" && !probe.available) {
      // Without an adapter, asking for WebGPU is refused with the reason, not skipped.
      const e = await selectBackend(name, { threads: 1 }).then(() => null, (e) => e);
      assert(e instanceof BackendUnavailableError, `--backend webgpu without an adapter: ${e}`);
      assert(e.message.includes("--backend webgpu: no WebGPU adapter"), e.message);
      continue;
    }
    const { backend, reason } = await selectBackend(name, { threads: 1 });
    assertEquals(backend.name, name);
    assert(reason.includes(`--backend ${name}`), reason);
    backend.dispose();
  }
});
