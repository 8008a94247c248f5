/**
 * The device report (bench/gpu_device.sh) end to end on this machine's adapter (llvmpipe in CI),
 * with small settings: every step a lent GPU machine will run is proven here first — adapter
 * info, goldens and sampling parity on webgpu, bench gpu with WebGPU vs WASM and round trips,
 * and the --legacy-read comparison. Skipped without an adapter.
 */
import { assert, assertEquals } from "../../support/assert.ts";
import { REPO } from "../../support/paths.ts";
import { ignore } from "./helpers.ts";

Deno.test({
  ignore,
  name: "bench/gpu_device.sh runs every step of the device report against this adapter",
  fn: async () => {
    const out = await Deno.makeTempDir({ prefix: "dllm-device-report-" });
    try {
      const r = await new Deno.Command("bash", {
        args: [`${REPO}/bench/gpu_device.sh`],
        cwd: REPO,
        env: {
          DLLM_DEVICE_GENERATE: "",
          DLLM_DEVICE_MODELS: `${REPO}/models/stories260K.gguf`,
          DLLM_DEVICE_PP: "8",
          DLLM_DEVICE_TG: "4",
          DLLM_DEVICE_REPS: "1",
          DLLM_DEVICE_DIM: "256",
          // One golden and the sampling parity tests (the whole set runs in golden_test.ts).
          DLLM_DEVICE_GOLDEN_FILTER: "/stories260K|sampling|topCandidates/",
          DLLM_DEVICE_OUT: out,
        },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
      assertEquals(r.code, 0, `the device report failed:\n${text}`);
      for (
        const s of [
          "adapter",
          "wait probe",
          "goldens and sampling parity on webgpu",
          "bench gpu",
          "bench gpu --legacy-read",
        ]
      ) {
        assert(new RegExp(`device report: ${s}: ok in \\d+ s`).test(text), `step ${s}:\n${text}`);
      }
      const adapter = JSON.parse(
        (await Deno.readTextFile(`${out}/adapter.log`)).split("\n").find((l) => l.startsWith("{"))!,
      );
      assert(adapter.adapter_info.available, "adapter info");
      // Which optional shader paths the device got, in the JSON and in the summary.
      assertEquals(adapter.shader_features.mode, "all");
      assert(/device report: webgpu shader features: mode all; granted /.test(text), text);
      assert(/golden stories260K[^\n]*ok/.test(text), `the golden ran:\n${text}`);
      assert(/webgpu sampling: a seeded generation[^\n]*ok/.test(text), "sampling parity ran");
      const bench = (name: string) =>
        Deno.readTextFileSync(`${out}/${name}`).split("\n").filter((l) => l.startsWith("{"))
          .map((l) => JSON.parse(l)).at(-1);
      const b = bench("bench.log");
      assert(b.decode_tokens_per_second > 0 && b.wasm_decode_tokens_per_second > 0, "tok/s");
      assertEquals(b.decode_read_back, "candidates");
      assertEquals(b.webgpu_round_trips.reads_per_decode_token, 1);
      assert(b.webgpu_round_trips.bytes_read_per_decode_token <= 1024, "bytes per step");
      assertEquals(b.same_first_tokens, true);
      assertEquals(b.shader_features.active, adapter.shader_features.active);
      const legacy = bench("bench_legacy.log");
      assertEquals(legacy.decode_read_back, "logits");
      assertEquals(legacy.tiled_prefill, false);
      // stories260K's vocabulary of 512 floats per step.
      assertEquals(legacy.webgpu_round_trips.bytes_read_per_decode_token, 512 * 4);
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});
