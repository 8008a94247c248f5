/**
 * How long the host waits for the GPU, whatever the GPU: Deno 2.9.6's `mapAsync` polls the device
 * and then sleeps 10 ms before it looks at the result (ext/webgpu/buffer.rs), so every awaited GPU
 * promise costs about 10 ms on any adapter. This probe puts that floor next to a step's own work:
 * a copy alone, a small compute pass (a dependent multiply-add chain on 256K invocations), an idle
 * buffer's map, and k passes submitted before one read (the wait paid once per k steps).
 * A software adapter gets one workgroup instead of 1024, so a pass stays a few milliseconds there.
 */

/** Medians (and minima) in milliseconds of each way of waiting. */
export interface WaitProbe {
  adapter: string;
  rounds: number;
  /** Workgroups of 256 invocations per pass (1 on a software adapter). */
  workgroups: number;
  ms: Record<string, { median: number; min: number }>;
}

const SHADER = `@group(0) @binding(0) var<storage, read_write> b: array<f32>;
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  var x = b[g.x];
  for (var i = 0u; i < 20000u; i++) { x = x * 1.0000001 + 0.5; }
  b[g.x] = x;
}`;

/** Run the probe on the default high-performance adapter (`rounds` timed rounds per way). */
export async function waitProbe(rounds = 20): Promise<WaitProbe> {
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new Error("no WebGPU adapter");
  const device = await adapter.requestDevice();
  const workgroups = adapter.info.isFallbackAdapter ? 1 : 1024;
  try {
    const U = GPUBufferUsage;
    const work = device.createBuffer({ size: 1 << 20, usage: U.STORAGE | U.COPY_SRC });
    const staging = device.createBuffer({ size: 256, usage: U.MAP_READ | U.COPY_DST });
    const module = device.createShaderModule({ code: SHADER });
    const pipeline = device.createComputePipeline({
      layout: "auto",
      compute: { module, entryPoint: "main" },
    });
    const group = device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [{ binding: 0, resource: { buffer: work } }],
    });
    const submit = (withPass: boolean) => {
      const enc = device.createCommandEncoder();
      if (withPass) {
        const pass = enc.beginComputePass();
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, group);
        pass.dispatchWorkgroups(workgroups);
        pass.end();
      }
      enc.copyBufferToBuffer(work, 0, staging, 0, 256);
      device.queue.submit([enc.finish()]);
    };
    const read = async () => {
      await staging.mapAsync(GPUMapMode.READ);
      staging.unmap();
    };
    const ms: WaitProbe["ms"] = {};
    const time = async (name: string, f: () => Promise<void>) => {
      for (let i = 0; i < 3; i++) await f();
      const t: number[] = [];
      for (let i = 0; i < rounds; i++) {
        const t0 = performance.now();
        await f();
        t.push(performance.now() - t0);
      }
      t.sort((a, b) => a - b);
      const r = (x: number) => Math.round(x * 100) / 100;
      ms[name] = { median: r(t[t.length >> 1]), min: r(t[0]) };
    };
    await time("map_idle_buffer", read);
    await time("copy_then_map", async () => {
      submit(false);
      await read();
    });
    await time("copy_then_submitted_work_done", async () => {
      submit(false);
      await device.queue.onSubmittedWorkDone();
    });
    for (const k of [1, 4, 16]) {
      await time(`${k}_passes_then_map`, async () => {
        for (let i = 0; i < k; i++) submit(true);
        await read();
      });
    }
    return { adapter: adapter.info.description || adapter.info.vendor, rounds, workgroups, ms };
  } finally {
    device.destroy();
  }
}
