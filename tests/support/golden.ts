/**
 * Run llama.cpp goldens (../shared/fixtures/golden) against our engine on any backend, judged by
 * the fixtures' own checker (check-golden.mjs, the tie-breaker by the fixtures' README).
 */
import type { Backend } from "../../kernels/backend.ts";
import { openGGUF } from "../../model/gguf/mod.ts";
import { LlamaStage } from "../../model/llama.ts";
import { argmax } from "../../model/sampler.ts";
import { tokenizerFromMetadata } from "../../model/tokenizer/mod.ts";
import { FIXTURES } from "./paths.ts";

/** One golden file's fields that we use. */
export interface Golden {
  model: string;
  prompt: string;
  prompt_id: string;
  prompt_tokens: number[];
  greedy_ids: number[];
  n_predict: number;
}

/** Every golden JSON file name, sorted. */
export function goldenFiles(): string[] {
  return [...Deno.readDirSync(`${FIXTURES}/golden`)]
    .map((e) => e.name)
    .filter((n) => n.endsWith(".json"))
    .sort();
}

/** What our engine produces for a golden: candidate JSON in check-golden.mjs's format. */
export async function candidateFor(golden: Golden, backend: Backend): Promise<{
  prompt_tokens: number[];
  logits: number[];
  greedy_ids: number[];
}> {
  const file = await openGGUF(`${FIXTURES}/${golden.model}`);
  try {
    const tok = tokenizerFromMetadata(file.metadata);
    const promptTokens = Array.from(tok.encode(golden.prompt, { addBos: tok.addBos }));
    const stage = await LlamaStage.load(file, backend, { maxBatch: 128 });
    const session = stage.newSession(256, "f32");
    // Feed the golden's own tokens so a tokenizer mismatch does not hide the logits comparison
    // (the checker still compares prompt_tokens first).
    let out = await stage.forward(session, { tokens: Int32Array.from(golden.prompt_tokens) });
    if (!("logits" in out)) throw new Error("expected logits");
    const logits = Array.from(out.logits);
    const greedy: number[] = [];
    for (let i = 0; i < golden.n_predict; i++) {
      if (!("logits" in out)) throw new Error("expected logits");
      const id = argmax(out.logits);
      greedy.push(id);
      if (i + 1 < golden.n_predict) {
        out = await stage.forward(session, { tokens: Int32Array.of(id) });
      }
    }
    stage.endSession(session);
    return { prompt_tokens: promptTokens, logits, greedy_ids: greedy };
  } finally {
    file.close();
  }
}

/** Judge a candidate with check-golden.mjs; returns [passed, checker output]. */
export async function checkGolden(
  goldenName: string,
  candidate: unknown,
): Promise<[boolean, string]> {
  const dir = await Deno.makeTempDir({ prefix: "dllm-golden-" });
  try {
    const cand = `${dir}/candidate.json`;
    await Deno.writeTextFile(cand, JSON.stringify(candidate));
    const out = await new Deno.Command("node", {
      args: [`${FIXTURES}/check-golden.mjs`, `${FIXTURES}/golden/${goldenName}`, cand],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    return [out.code === 0, text.trim()];
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Register one Deno test per golden for a backend factory. */
export function goldenTests(
  label: string,
  makeBackend: () => Promise<Backend>,
  opts: { ignore?: boolean } = {},
): void {
  for (const name of goldenFiles()) {
    Deno.test({
      name: `${label}: golden ${name}`,
      ignore: opts.ignore,
      fn: async () => {
        const golden = JSON.parse(await Deno.readTextFile(`${FIXTURES}/golden/${name}`)) as Golden;
        const backend = await makeBackend();
        try {
          const candidate = await candidateFor(golden, backend);
          const [ok, report] = await checkGolden(name, candidate);
          if (!ok) throw new Error(`${name} (${label}) failed llama.cpp's checker:\n${report}`);
        } finally {
          backend.dispose();
        }
      },
    });
  }
}
