/**
 * `deno task bench batch` — continuous-batching decode in one process, ours against llama.cpp's
 * C API on the same GGUF file, threads and run: N sequences each decode one token per pass, for
 * each N in `--seqs`, and the gain of N sequences over one is printed for both engines.
 *
 * ```sh
 * deno task bench batch --model bench/.cache/models/m110-q8_0.gguf --seqs 1,4,16 --reps 3
 * ```
 *
 * This is the ceiling the OpenAI API's batching (`bench api --clients 1,16`) works under: no HTTP,
 * no clients, no sampling beyond argmax, no new prompts beside the running streams. The reference
 * is `llamaref-batched` (bench/native/batched.cpp, built once beside llamaref-bench in
 * bench/.cache/llamaref): each N gets its own context with N sequences of `--prompt` tokens, then
 * `--tg` calls of `llama_decode` carry one token of every sequence, each fed its row's argmax.
 * Ours does the same with `LlamaStage.forwardBatch` over N sessions. Each round runs llama.cpp
 * (its own process, all N) and then ours (all N); every round is printed, and the summary gives
 * medians and best round against best round.
 * @module
 */
import { Flags, runBench, UsageError } from "./lib/cli.ts";
import { ensureBatchedRef, refBatchedDecode } from "./lib/batched_ref.ts";
import type { Backend } from "../kernels/backend.ts";
import { createReferenceBackend } from "../kernels/reference/mod.ts";
import { createWasmBackend } from "../kernels/wasm/mod.ts";
import { openGGUF } from "../model/gguf/mod.ts";
import { LlamaStage, type Session } from "../model/llama.ts";
import { argmax } from "../model/sampler.ts";
import { generatedModel } from "./lib/models.ts";
import { median, round } from "./lib/stats.ts";

const USAGE = `usage: deno task bench batch [flags]

  --model <path.gguf>   model (default: the generated 110M Q8_0 bench model)
  --seqs <list>         sequences per pass, comma-separated (default 1,16)
  --prompt <n>          prompt tokens per sequence before decoding (default 32)
  --tg <n>              decode passes timed per round (default 32)
  --reps <n>            rounds (default 3)
  --threads <n>         threads of both engines (default: all cores)
  --backend <name>      wasm|reference (default wasm)
  --no-ref              ours only

Prints one line per round on stderr and one JSON object on stdout.`;

interface Options {
  model?: string;
  seqs: number[];
  prompt: number;
  tg: number;
  reps: number;
  threads: number;
  backend: "wasm" | "reference";
  ref: boolean;
}

function parse(args: string[]): Options {
  const o: Options = {
    seqs: [1, 16],
    prompt: 32,
    tg: 32,
    reps: 3,
    threads: navigator.hardwareConcurrency,
    backend: "wasm",
    ref: true,
  };
  const f = new Flags(args);
  for (let a = f.next(); a !== undefined; a = f.next()) {
    if (a === "--model") o.model = f.value();
    else if (a === "--seqs") {
      o.seqs = f.value().split(",").map((s) => {
        const n = Number(s);
        if (!Number.isInteger(n) || n < 1 || n > 256) {
          throw new UsageError(`--seqs: ${s} is not a count from 1 to 256`);
        }
        return n;
      });
    } else if (a === "--prompt") o.prompt = f.count();
    else if (a === "--tg") o.tg = f.count();
    else if (a === "--reps") o.reps = f.count();
    else if (a === "--threads") o.threads = f.count();
    else if (a === "--backend") {
      const v = f.value();
      if (v !== "wasm" && v !== "reference") {
        throw new UsageError("--backend takes wasm or reference");
      }
      o.backend = v;
    } else if (a === "--no-ref") o.ref = false;
    else throw new UsageError(`unknown flag ${a} (see --help)`);
  }
  return o;
}

const best = (xs: number[]) => Math.max(...xs);

/** The prompt of sequence `s`: BOS-free pseudo-random ids, different per sequence. */
function promptOf(s: number, n: number, nVocab: number): Int32Array {
  let x = (12345 + 7919 * s) >>> 0;
  return Int32Array.from({ length: n }, () => {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    return 3 + ((x >>> 8) % (nVocab - 3));
  });
}

/** Our decode tokens/s with `n` sessions in every pass: `tg` passes after an untimed prefill. */
async function oursDecode(stage: LlamaStage, n: number, o: Options): Promise<number> {
  const sessions: Session[] = Array.from(
    { length: n },
    () => stage.newSession(o.prompt + o.tg + 8),
  );
  try {
    const V = stage.config.nVocab;
    const last = new Int32Array(n);
    for (let s = 0; s < n; s++) {
      const out = await stage.forward(sessions[s], { tokens: promptOf(s, o.prompt, V) });
      if (!("logits" in out)) throw new Error("expected logits");
      last[s] = argmax(out.logits);
    }
    const t0 = performance.now();
    for (let k = 0; k < o.tg; k++) {
      const outs = await stage.forwardBatch(
        sessions.map((session, s) => ({ session, input: { tokens: last.subarray(s, s + 1) } })),
      );
      outs.forEach((out, s) => {
        if (!("logits" in out)) throw new Error("expected logits");
        last[s] = argmax(out.logits);
      });
    }
    return (n * o.tg * 1000) / (performance.now() - t0);
  } finally {
    for (const s of sessions) stage.endSession(s);
  }
}

async function main(args: string[]): Promise<void> {
  const o = parse(args);
  const model = o.model ?? await generatedModel("q8_0");
  const bin = o.ref ? await ensureBatchedRef() : "";
  const backend: Backend = o.backend === "wasm"
    ? await createWasmBackend({ threads: o.threads })
    : createReferenceBackend();
  const file = await openGGUF(model);
  let stage: LlamaStage;
  try {
    stage = await LlamaStage.load(file, backend, {
      maxBatch: Math.max(o.prompt, ...o.seqs),
    });
  } finally {
    file.close();
  }
  const ours = new Map<number, number[]>(o.seqs.map((n) => [n, []]));
  const ref = new Map<number, number[]>(o.seqs.map((n) => [n, []]));
  try {
    for (const n of o.seqs) await oursDecode(stage, n, { ...o, tg: 4 }); // warm-up
    for (let rep = 0; rep < o.reps; rep++) {
      const line = [`bench batch round ${rep + 1}/${o.reps}:`];
      if (o.ref) {
        const r = await refBatchedDecode(bin, model, o);
        for (const n of o.seqs) ref.get(n)!.push(r.get(n)!);
        line.push(`llama.cpp ${o.seqs.map((n) => `${n}×: ${round(r.get(n)!, 1)}`).join(" ")}`);
      }
      const mine: string[] = [];
      for (const n of o.seqs) {
        const t = await oursDecode(stage, n, o);
        ours.get(n)!.push(t);
        mine.push(`${n}×: ${round(t, 1)}`);
      }
      line.push(`ours ${mine.join(" ")} (tok/s)`);
      console.error(line.join(" | "));
    }
  } finally {
    backend.dispose();
  }
  const one = o.seqs.includes(1) ? 1 : undefined;
  const rows = o.seqs.map((n) => {
    const mine = ours.get(n)!;
    const theirs = ref.get(n)!;
    return {
      seqs: n,
      tokens_per_second: round(median(mine)),
      best_tokens_per_second: round(best(mine)),
      ref_tokens_per_second: o.ref ? round(median(theirs)) : null,
      ref_best_tokens_per_second: o.ref ? round(best(theirs)) : null,
      /** Ours over llama.cpp at the same N, best round against best round. */
      best_ratio: o.ref ? round(best(mine) / best(theirs), 3) : null,
      /** Tokens/s at N over tokens/s at 1, best rounds, for each engine. */
      gain: one === undefined ? null : round(best(mine) / best(ours.get(one)!), 3),
      ref_gain: one === undefined || !o.ref ? null : round(best(theirs) / best(ref.get(one)!), 3),
      runs: mine.map((x) => round(x)),
      ref_runs: theirs.map((x) => round(x)),
    };
  });
  console.log(JSON.stringify({
    bench: "batch",
    model,
    backend: o.backend,
    threads: o.threads,
    ref: o.ref ? "llama.cpp C API (llamaref-batched)" : null,
    prompt: o.prompt,
    tg: o.tg,
    rows,
  }));
}

if (import.meta.main) await runBench("batch", USAGE, main);
