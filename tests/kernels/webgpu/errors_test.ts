/**
 * Failure paths of the WebGPU backend: device loss and out-of-memory become typed errors the
 * caller can catch to fall back to the CPU; unsupported inputs say what is wrong.
 */
import { GGMLType } from "../../../kernels/quant/mod.ts";
import {
  createWebGPUBackend,
  probeAdapter,
  WebGPUDeviceLostError,
  WebGPUError,
  WebGPUOutOfMemoryError,
} from "../../../kernels/webgpu/mod.ts";
import { assert, assertRejects, assertThrows } from "../../support/assert.ts";
import { ignore, PROBE } from "./helpers.ts";

const T = { ignore };

Deno.test({
  ...T,
  name: "webgpu: probeAdapter describes the adapter (fallback flag, features, limits)",
  fn: async () => {
    const p = await probeAdapter();
    assert(p.available, "an adapter is available");
    assert(p.description === PROBE.description);
    assert(typeof p.isFallback === "boolean");
    assert(p.limits.maxStorageBufferBindingSize > 0, "limits are reported");
    assert(Array.isArray(p.features) && Array.isArray(p.wgslFeatures));
    console.log(
      `${p.description}: fallback=${p.isFallback}, features=[${p.features.join(", ")}], ` +
        `wgsl=[${p.wgslFeatures.join(", ")}]`,
    );
  },
});

Deno.test({
  ...T,
  name: "webgpu: a lost device turns into WebGPUDeviceLostError, not a crash",
  fn: async () => {
    const adapter = (await navigator.gpu.requestAdapter())!;
    const device = await adapter.requestDevice();
    const be = await createWebGPUBackend({ adapter, device });
    const b = be.buffer(8);
    be.write(b, new Float32Array(8).fill(1));
    await be.read(b);
    device.destroy();
    await device.lost;
    await Promise.resolve();
    assertThrows(() => be.buffer(4), WebGPUDeviceLostError);
    await assertRejects(() => be.read(b), WebGPUDeviceLostError);
    be.dispose();
  },
});

Deno.test({
  ...T,
  name: "webgpu: a loss while a validation error is pending still stays lost",
  fn: async () => {
    const adapter = (await navigator.gpu.requestAdapter())!;
    const device = await adapter.requestDevice();
    const be = await createWebGPUBackend({ adapter, device });
    const out = be.buffer(4);
    // An invalid buffer (MAP_READ goes only with COPY_DST): an uncaptured validation error,
    // pending in the backend.
    device.createBuffer({ size: 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.STORAGE });
    await new Promise((r) => setTimeout(r, 200));
    device.destroy();
    await device.lost;
    await new Promise((r) => setTimeout(r, 50));
    // Before, the validation error was thrown once and the loss forgotten: buffer() and ops
    // were accepted on the dead device.
    await assertRejects(() => be.read(out), WebGPUDeviceLostError);
    assertThrows(() => be.buffer(4), WebGPUDeviceLostError);
    await assertRejects(() => be.read(out), WebGPUDeviceLostError);
    be.dispose();
  },
});

Deno.test({
  ...T,
  name: "webgpu: allocations beyond the device's limits throw WebGPUOutOfMemoryError",
  fn: async () => {
    const be = await createWebGPUBackend();
    try {
      const e = assertThrows(() => be.kvCache(1, 1 << 24, 4096, "f32"), WebGPUOutOfMemoryError);
      assert(e instanceof WebGPUDeviceLostError, "callers can catch one class for fallback");
      assertThrows(() => be.buffer(2 ** 31), WebGPUOutOfMemoryError);
    } finally {
      be.dispose();
    }
  },
});

Deno.test({
  ...T,
  name: "webgpu: unsupported weight types and bad shapes are rejected with the tensor's name",
  fn: async () => {
    const be = await createWebGPUBackend();
    try {
      const e = assertThrows(
        () =>
          be.upload({
            name: "blk.0.ffn_up.weight",
            type: GGMLType.Q8_K,
            shape: [256, 1],
            data: new Uint8Array(292),
          }),
        WebGPUError,
      );
      assert(e.message.includes("blk.0.ffn_up.weight") && e.message.includes("Q8_K"), e.message);
      assertThrows(
        () => be.upload({ name: "w", type: GGMLType.F32, shape: [4, 2], data: new Uint8Array(4) }),
        WebGPUError,
      );
    } finally {
      be.dispose();
    }
  },
});
