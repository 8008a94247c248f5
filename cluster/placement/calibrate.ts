/**
 * Start-up calibration: time a short Q8_0 matrix×vector product on the agent's backend, so
 * placement can give faster nodes more layers. Published in gossip metadata as GFLOP/s.
 */
import type { Backend } from "../../kernels/backend.ts";
import { GGMLType, quantizeRow } from "../../kernels/quant/mod.ts";

/**
 * Measure matvec throughput in GFLOP/s for about `budgetMs` milliseconds: the best of many short
 * rounds, not their average. Agents often calibrate together on a busy host (a cluster starting
 * at once, neighbours holding cores); the average measured who was scheduled, and three agents
 * on one 2-core machine calibrated 2.3× apart and got 6 to 14 layers of the same model. The best
 * round is what the node does when it has its cores, the figure placement should weigh.
 */
export async function calibrate(backend: Backend, budgetMs = 100): Promise<number> {
  const cols = 1024;
  const rows = 512;
  const f32 = new Float32Array(rows * cols);
  for (let i = 0; i < f32.length; i++) f32[i] = Math.sin(i * 0.37) * 0.5;
  // Quantized weights are what real models hold; Q8_0 is the most common type.
  const data = quantizeRow(GGMLType.Q8_0, f32, f32.length);
  const w = backend.upload({ name: "calibration", type: GGMLType.Q8_0, shape: [cols, rows], data });
  const x = backend.buffer(cols);
  const y = backend.buffer(rows);
  backend.write(x, f32.subarray(0, cols));
  try {
    backend.matmul(w, x, y, 1); // warm-up (compiles pipelines, touches memory)
    await backend.read(y, 0, 1);
    const perRound = 4;
    const t0 = performance.now();
    let best = Infinity;
    for (let rounds = 0; rounds < 3 || performance.now() - t0 < budgetMs; rounds++) {
      const r0 = performance.now();
      for (let i = 0; i < perRound; i++) backend.matmul(w, x, y, 1);
      await backend.read(y, 0, 1);
      best = Math.min(best, performance.now() - r0);
    }
    // A round below the timer's resolution (coarse clocks) is taken as 10 µs, not as infinite speed.
    return (2 * rows * cols * perRound) / (Math.max(best, 0.01) / 1000) / 1e9;
  } finally {
    backend.free(w);
    backend.free(x);
    backend.free(y);
  }
}
