/** The benchmarks of bench/: name → entry file. `deno task bench` and `llmctl bench` list these. */
export const BENCHES: Record<string, string> = {
  api: "api.ts",
  batch: "batch.ts",
  memory: "memory.ts",
  cpu: "cpu.ts",
  gpu: "gpu.ts",
  gossip: "gossip.ts",
  pipeline: "pipeline.ts",
  scale: "scale.ts",
  serve: "serve.ts",
  transfer: "transfer.ts",
};
