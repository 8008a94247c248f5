/** The WebGPU device's buffer pool keeps freed activation buffers for reuse, within a bound. */
import { GpuResources } from "../../../kernels/webgpu/resources.ts";
import { assert, assertEquals } from "../../support/assert.ts";
import { ignore } from "./helpers.ts";

Deno.test({
  name: "webgpu: freed buffers are pooled up to maxPooledBytes, destroyed past it",
  ignore,
  fn: async () => {
    const adapter = (await navigator.gpu.requestAdapter())!;
    const gpu = new GpuResources(await adapter.requestDevice(), "test");
    try {
      gpu.maxPooledBytes = 1024;
      const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST;
      const made = [0, 1, 2].map(() => gpu.createBuffer(512, usage, "a test buffer"));
      for (const r of made) gpu.pool(r);
      // Before, every freed buffer stayed on the device for good (evicted prefix-cache blocks,
      // a large batch's buffers).
      assertEquals(gpu.pooledBytes, 1024, "the third went past the bound");
      gpu.pool(made[0]);
      assertEquals(gpu.pooledBytes, 1024, "a buffer is pooled once");
      const again = gpu.pooled(512);
      assert(again === made[0] || again === made[1], "a pooled buffer is handed out again");
      assertEquals(gpu.pooledBytes, 512);
      assertEquals(gpu.pooled(256), undefined, "only buffers of the size asked for");
    } finally {
      gpu.dispose();
    }
  },
});
