/**
 * The scale flow of `deno task bench scale` at CI size: a ~330M-parameter llama (Llama-3's
 * vocabulary and rope, 6 layers × 1024 wide, Q4_0, 194 MB) deployed from the one agent holding
 * it to 2 more (per-layer fetch), plus a standby:
 *  1. next-token logits and 16 greedy ids through the 3 stages against llama.cpp's (stored in
 *     scale_ci_golden.json, made by `ref.mjs eval --kv-type f32 --cpu-variant x64` on the same
 *     deterministic file), judged by the fixtures' check-golden.mjs;
 *  4. each fetching agent received only the header and its layers' tensors;
 *  5. kill -9 of the middle stage mid-generation: the standby is deployed to, fetches the
 *     layers from peers, and the generation ends with the ids of check 1.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { scaleModel } from "../../bench/lib/scale_models.ts";
import { ScaleCluster } from "../../bench/lib/scale_cluster.ts";
import {
  checkAgainstLlamaCpp,
  SCALE_PROMPTS,
  type ScaleGolden,
} from "../../bench/lib/scale_check.ts";
import { openModelFile } from "../../model/engine.ts";
import { agentFootprint } from "../../cluster/agent.ts";
import { modelBytes } from "../../cluster/placement/mod.ts";

const GOLDEN: { model_sha256: string; file_bytes: number; goldens: Record<string, ScaleGolden> } =
  JSON.parse(Deno.readTextFileSync(new URL("./scale_ci_golden.json", import.meta.url)));

async function sha256File(path: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return Array.from(new Uint8Array(digest)).map((b) => b.toString(16).padStart(2, "0")).join("");
}

Deno.test({
  name:
    "scale flow (CI size): deploy to 3 agents, llama.cpp's logits and ids through the pipeline, kill -9 with a standby",
  fn: async () => {
    const t0 = performance.now();
    const model = await scaleModel("ci_q4_0");
    assertEquals(
      await sha256File(model),
      GOLDEN.model_sha256,
      `${model} is not the file the stored llama.cpp golden was made from (generator changed? ` +
        `delete it and regenerate scale_ci_golden.json with bench/lib/scale_check.ts)`,
    );
    const file = await openModelFile(model);
    let need: number;
    try {
      need = modelBytes(agentFootprint(file, 256, 2));
    } finally {
      file.close();
    }
    // Half the model per agent: the embedding and output matrices (74 MB each) dominate a model
    // this small, so 40% would not hold a first or last stage; two agents still cannot hold it.
    const budget = Math.floor(0.5 * need);
    const lines: string[] = [];
    const c = await ScaleCluster.start({
      model,
      budgetBytes: budget,
      dir: await Deno.makeTempDir({ prefix: "dllm-scale-test-" }),
      threads: 1,
      contextSize: 256,
      maxSessions: 2,
      log: (l) => lines.push(l),
    });
    try {
      // 4. distribution: only the header and each agent's own layers are fetched.
      const d = await c.deploy(["b", "c"], { readyTimeoutMs: 60_000 });
      assertEquals(d.placement.map((s) => s.split(":")[0]), ["a", "b", "c"], d.placement.join());
      for (const n of ["b", "c"]) {
        assert(d.bytes_fetched[n] > 0, `${n} fetched nothing`);
        assertEquals(d.bytes_fetched[n], d.bytes_needed[n], `${n} fetched more than its share`);
        assert(d.bytes_needed[n] < 0.6 * d.file_bytes, `${n} needed ${d.bytes_needed[n]} bytes`);
      }
      assertEquals(d.corrupt_chunks, 0);

      // 1. correctness through the 3 stages, against llama.cpp.
      c.log("checking against llama.cpp's goldens");
      const greedy: number[][] = [];
      for (const p of SCALE_PROMPTS) {
        const r = await checkAgainstLlamaCpp(c, model, p, GOLDEN.goldens[p.id], 16);
        assert(r.pass, `${p.id}: ${r.checker}\n${JSON.stringify(r)}`);
        assertEquals(r.stages.length, 3);
        greedy.push(r.greedy_ids);
      }

      // 5. kill -9 of the middle stage at token 8 of 16: the standby takes its layers, and the
      // generation (through agent a as the head) ends with the ids the stages gave above.
      const k = await c.killDuring(SCALE_PROMPTS[0].text, 16, "b", 8, "b2");
      assertEquals(k.generation.tokens, greedy[0], "ids after recovery");
      assertEquals(k.generation.recoveries, 1);
      assert(k.standby_deploy, "the standby was not deployed to");
      assert(
        k.standby_deploy.placement.some((s) => s.startsWith("b2:")),
        `b2 holds no stage: ${k.standby_deploy.placement.join(" ")}`,
      );
      assert(k.standby_deploy.bytes_fetched.b2 > 0, "the standby fetched nothing");
      // The standby joined a serving cluster: it loaded its layers as they arrived; the first
      // deploy's fetchers loaded theirs after their fetch.
      const loads = c.stageLoads;
      assert(loads.some((l) => /^b2 loaded .*as its layers arrived/.test(l)), loads.join("\n"));
      assert(!loads.some((l) => /^[bc] loaded .*as its layers arrived/.test(l)), loads.join("\n"));
      // Minimal movement: the standby takes exactly b's layers, a and c keep theirs.
      assertEquals(
        k.standby_deploy.placement,
        d.placement.map((s) => s.replace(/^b:/, "b2:")),
        "the survivors' ranges moved",
      );
      assertEquals(
        k.standby_deploy.bytes_fetched.b2,
        d.bytes_needed.b,
        "b2 fetched more than b's share",
      );
      const view = await c.info();
      assert(!view.placement!.stages.some((s) => s.nodeId === "b"), "b is still placed");
    } catch (e) {
      console.error(lines.join("\n"));
      throw e;
    } finally {
      await c.stop();
    }
    console.error(lines.join("\n"));
    console.error(`scale flow (CI size): ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  },
});
