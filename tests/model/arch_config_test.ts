/**
 * What users see of an architecture: `llmctl models inspect` names it with its experts and
 * sliding window, and a model of an architecture we do not run fails at load with one line that
 * names the ones we do.
 */
import {
  configFromFile,
  formatModelSummary,
  summarizeModel,
  SUPPORTED_ARCHITECTURES,
} from "../../model/config.ts";
import { type GGUFTensorInput, meta, writeGGUF } from "../../model/gguf/writer.ts";
import { editedGGUF } from "../support/gguf_edit.ts";
import { openGGUF } from "../../model/gguf/mod.ts";
import type { GGUFArray, GGUFMetadataEntry } from "../../model/gguf/types.ts";
import { LlamaStage } from "../../model/llama.ts";
import { Engine } from "../../cluster/pipeline/mod.ts";
import { createReferenceBackend } from "../../kernels/reference/mod.ts";
import { llmctl, llmctlJson } from "../support/cli.ts";
import { FIXTURES, REPO } from "../support/paths.ts";
import { assert, assertEquals } from "../support/assert.ts";

async function unsupportedModel(): Promise<string> {
  const path = await Deno.makeTempFile({ suffix: ".gguf" });
  await Deno.writeFile(
    path,
    writeGGUF({
      metadata: [meta.string("general.architecture", "mamba"), meta.u32("mamba.block_count", 1)],
      tensors: [{ name: "token_embd.weight", dims: [4, 2], type: 0, data: new Uint8Array(32) }],
    }),
  );
  return path;
}

Deno.test("summaries name the architecture, experts and sliding window", async () => {
  const want: Record<string, string> = {
    "qwen3moe-q4_0": "qwen3moe, 2 layers, 4 experts (2 used per token)",
    "gemma3-q8_0": "gemma3, 3 layers, sliding window 16 (pattern 3: 2 of 3 layers slide)",
    "phi3-q4_0": "phi3, 2 layers",
    "qwen3-q8_0": "qwen3, 2 layers",
  };
  for (const [name, line] of Object.entries(want)) {
    const file = await openGGUF(`${FIXTURES}/models/${name}.gguf`);
    try {
      assertEquals(formatModelSummary(summarizeModel(file)), line);
    } finally {
      file.close();
    }
  }
});

Deno.test("llmctl models inspect --json carries the model summary", async () => {
  const out = await llmctlJson([
    "models",
    "inspect",
    `${FIXTURES}/models/gemma3-q8_0.gguf`,
    "--json",
  ]);
  assertEquals(out.model, {
    architecture: "gemma3",
    supported: true,
    layers: 3,
    sliding_window: 16,
    sliding_window_pattern: 3,
  });
});

Deno.test("an unsupported architecture fails at load with one line naming the supported", async () => {
  const path = await unsupportedModel();
  try {
    const line = `unsupported architecture "mamba" (supported: ${
      SUPPORTED_ARCHITECTURES.join(", ")
    })`;
    const file = await openGGUF(path);
    try {
      assertEquals(summarizeModel(file).error, line);
    } finally {
      file.close();
    }
    const res = await llmctl(["generate", "--model", path, "--prompt", "hi"]);
    assertEquals(res.code, 1);
    // Deno's own progress lines (npm metadata downloads) are not llmctl's
    const errLines = res.stderr.replace(new RegExp(`${"\u001b"}\\[[0-9;]*m`, "g"), "").trim().split(
      "\n",
    )
      .filter((l) => !l.startsWith("Download "));
    assertEquals(errLines.length, 1, res.stderr);
    assert(errLines[0].endsWith(line), res.stderr);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("a tensor of a type no backend runs: models inspect says the file cannot run", async () => {
  // Before: "supported": true, while the load failed with "unsupported tensor type type 99"
  // (found by an independent tester).
  const path = await editedGGUF(`${REPO}/models/stories260K.gguf`, {
    tensors: (ts) =>
      ts.map((t) =>
        t.name === "output_norm.weight" ? { ...t, type: 99, nBytes: t.data.length } : t
      ),
  });
  try {
    const file = await openGGUF(path);
    let s;
    try {
      s = summarizeModel(file);
    } finally {
      file.close();
    }
    assertEquals(s.supported, false);
    assertEquals(
      s.error,
      "tensor output_norm.weight: type 99 is a type this engine does not run",
    );
    const out = await llmctlJson(["models", "inspect", path, "--json"]);
    assertEquals((out.model as { supported: boolean }).supported, false);
  } finally {
    await Deno.remove(path);
  }
});

/** What loading `path` on the reference backend throws (undefined: it loaded). */
async function loadError(path: string): Promise<Error | undefined> {
  const file = await openGGUF(path);
  try {
    let err: Error | undefined;
    await LlamaStage.load(file, createReferenceBackend()).catch((e) => err = e);
    return err;
  } finally {
    file.close();
    await Deno.remove(path);
  }
}

Deno.test("LongRoPE factors load on phi3 (both sets) and are refused elsewhere", async () => {
  // The math is checked against llama.cpp in tests/model/longrope_test.ts; here, who reads them.
  const factors = (names: string[]) => ({
    tensors: (t: GGUFTensorInput[]) => [...t, ...names.map((n) => f32Tensor(n, 8))],
  });
  const both = ["rope_factors_long.weight", "rope_factors_short.weight"];
  assertEquals(await configError("phi3-f32", factors(both)), undefined);
  const alone = await configError("phi3-f32", factors(["rope_factors_long.weight"]));
  assert(
    alone?.includes("rope_factors_long.weight is present but rope_factors_short.weight is not"),
    `${alone}`,
  );
  for (const model of ["qwen3-f32", "tiny-f32"]) {
    const err = await configError(model, factors(both));
    assert(err?.includes("tensor rope_factors_long.weight is not used by the"), `${model}: ${err}`);
  }
});

Deno.test("keys llama.cpp requires are required here too, not defaulted", async () => {
  const cases: [string, string][] = [
    ["tiny-f32", "llama.context_length"],
    ["tiny-f32", "llama.attention.layer_norm_rms_epsilon"],
    ["gemma3-f32", "gemma3.attention.layer_norm_rms_epsilon"],
  ];
  for (const [name, key] of cases) {
    const path = await editedGGUF(`${FIXTURES}/models/${name}.gguf`, {
      metadata: (m) => m.filter((e) => e.key !== key),
    });
    const err = await loadError(path);
    assert(err?.message.includes(`lacks required key ${key}`), `${key}: ${err}`);
  }
});

Deno.test("gemma3 without a sliding window runs every layer globally, as llama.cpp does", async () => {
  const path = await editedGGUF(`${FIXTURES}/models/gemma3-f32.gguf`, {
    metadata: (m) => m.filter((e) => e.key !== "gemma3.attention.sliding_window"),
  });
  try {
    const file = await openGGUF(path);
    try {
      assertEquals(configFromFile(file).slidingWindow, 0);
    } finally {
      file.close();
    }
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("a tokenizer with fewer tokens than token_embd has rows is refused at open", async () => {
  // Cut every tokenizer array to 200 entries; the model keeps its 300 rows.
  const path = await editedGGUF(`${FIXTURES}/models/tiny-f32.gguf`, {
    metadata: (m) =>
      m.map((e) => {
        const v = e.value as GGUFArray;
        return e.key.startsWith("tokenizer.ggml.") && v?.values?.length === 300
          ? { ...e, value: { ...v, values: v.values.slice(0, 200) } as GGUFArray }
          : e;
      }),
  });
  try {
    // Before, it loaded, and a sampled id of 200 or more failed the generation mid-stream.
    let err: Error | undefined;
    await Engine.open(path, createReferenceBackend()).catch((e) => err = e);
    assert(err?.message.includes("lists 200 tokens but token_embd.weight has 300 rows"), `${err}`);
  } finally {
    await Deno.remove(path);
  }
});

/** The error configFromFile gives for an edited copy of fixture `name` (undefined: none). */
async function configError(name: string, edit: Parameters<typeof editedGGUF>[1]) {
  const path = await editedGGUF(`${FIXTURES}/models/${name}.gguf`, edit);
  try {
    const file = await openGGUF(path);
    try {
      configFromFile(file);
      return undefined;
    } catch (e) {
      return (e as Error).message;
    } finally {
      file.close();
    }
  } finally {
    await Deno.remove(path);
  }
}

const f32Tensor = (name: string, n: number) => ({
  name,
  dims: [n],
  type: 0,
  data: new Uint8Array(4 * n),
});

Deno.test("tensors llama.cpp adds to the math, or refuses, are refused here, not left out", async () => {
  // Each was loaded silently and left out of the math: logits 2.0–2.4 off llama.cpp's, with
  // another argmax (measured against llama.cpp on these fixtures).
  const cases: [string, string, number][] = [
    ["tiny-f32", "blk.0.attn_output.bias", 64],
    ["tiny-f32", "blk.1.ffn_down.bias", 64],
    ["qwen2-q8_0", "output.bias", 300],
    ["phi3-f32", "blk.0.attn_qkv.bias", 48],
    ["qwen3-f32", "blk.0.attn_q.bias", 64],
    ["qwen3-f32", "blk.7.attn_norm.weight", 64],
  ];
  for (const [model, tensor, n] of cases) {
    const err = await configError(model, { tensors: (t) => [...t, f32Tensor(tensor, n)] });
    assert(err?.includes(`tensor ${tensor} is not used by the`), `${model} + ${tensor}: ${err}`);
  }
  // Every fixture of every architecture still opens.
  for await (const e of Deno.readDir(`${FIXTURES}/models`)) {
    if (!e.name.endsWith(".gguf")) continue;
    const file = await openGGUF(`${FIXTURES}/models/${e.name}`);
    try {
      configFromFile(file);
    } finally {
      file.close();
    }
  }
});

Deno.test("keys llama.cpp applies and this code does not are refused unless neutral", async () => {
  const withKey = (e: GGUFMetadataEntry) => ({
    metadata: (m: GGUFMetadataEntry[]) => [...m.filter((x) => x.key !== e.key), e],
  });
  const cases: [string, GGUFMetadataEntry, string | undefined][] = [
    ["gemma3-f32", meta.f32("gemma3.final_logit_softcapping", 2), "final_logit_softcapping 2"],
    ["gemma3-f32", meta.f32("gemma3.final_logit_softcapping", 0), undefined],
    // Applied since LongRoPE, on every architecture as llama.cpp does (RoPE's cos and sin times
    // it: tests/model/longrope_test.ts); what is no scale at all is refused.
    ["qwen3-f32", meta.f32("qwen3.rope.scaling.attn_factor", 1.5), undefined],
    ["qwen3-f32", meta.f32("qwen3.rope.scaling.attn_factor", -1), "attn_factor -1 is not a"],
    ["qwen3-f32", meta.bool("qwen3.attention.causal", false), "attention.causal is false"],
    ["qwen3-f32", meta.bool("qwen3.attention.causal", true), undefined],
    ["qwen3-f32", meta.u32("qwen3.rope.dimension_count", 8), "partial rotary"],
    ["tiny-f32", meta.u32("llama.rope.dimension_count", 8), "partial rotary"],
  ];
  for (const [model, entry, want] of cases) {
    const err = await configError(model, withKey(entry));
    if (want === undefined) assertEquals(err, undefined, `${model} + ${entry.key}`);
    else assert(err?.includes(want), `${model} + ${entry.key}=${entry.value}: ${err}`);
  }
});

/** `entries` with `key`'s value replaced (its type too). */
const setKey = (key: string, value: GGUFMetadataEntry) => (m: GGUFMetadataEntry[]) =>
  m.map((e) => e.key === key ? value : e);

Deno.test("values no tensor confirms are refused or unused: a MoE's dense FFN size, gemma3's SWA base, blk.01", async () => {
  // qwen3moe's feed_forward_length sizes no tensor (every FFN is experts), but sized the
  // workspace: 2^20 there made a 750 KB model allocate gigabytes. It is not read now: the model
  // loads and answers as before.
  const huge = await editedGGUF(`${FIXTURES}/models/qwen3moe-f32.gguf`, {
    metadata: setKey(
      "qwen3moe.feed_forward_length",
      meta.u32("qwen3moe.feed_forward_length", 2 ** 30),
    ),
  });
  try {
    const ids = async (path: string) => {
      const e = await Engine.open(path, createReferenceBackend());
      try {
        const r = await e.generate({
          promptTokens: [1, 259, 82, 264],
          maxTokens: 4,
          sampler: { temperature: 0 },
        });
        return r.tokens;
      } finally {
        e.close();
      }
    };
    assertEquals(await ids(huge), await ids(`${FIXTURES}/models/qwen3moe-f32.gguf`));
  } finally {
    await Deno.remove(huge);
  }
  // gemma3's sliding layers' RoPE base: 0 or NaN loaded, and every request then failed with
  // "its weights hold NaN or Inf"; a NaN window silently turned sliding attention off.
  for (const v of [0, -1, NaN]) {
    const err = await configError("gemma3-f32", {
      metadata: setKey("gemma3.rope.freq_base_swa", meta.f32("gemma3.rope.freq_base_swa", v)),
    });
    assert(err?.includes("rope.freq_base_swa"), `${v}: ${err}`);
  }
  const nanWindow = await configError("gemma3-f32", {
    metadata: setKey(
      "gemma3.attention.sliding_window",
      meta.f32("gemma3.attention.sliding_window", NaN),
    ),
  });
  assert(nanWindow?.includes("sliding_window must be a positive integer"), nanWindow);
  // A block number with a leading zero names a tensor nothing reads.
  const blk01 = await configError("tiny-f32", {
    tensors: (
      t,
    ) => [...t, {
      ...t.find((x) => x.name === "blk.1.attn_norm.weight")!,
      name: "blk.01.attn_norm.weight",
    }],
  });
  assert(blk01?.includes("blk.01.attn_norm.weight is not used"), blk01);
  // A block without a tensor block 0 has: refused at open, so `models inspect` says so too.
  const missing = await configError("tiny-f32", {
    tensors: (t) => t.filter((x) => x.name !== "blk.1.ffn_gate.weight"),
  });
  assertEquals(missing, "tensor blk.1.ffn_gate.weight is missing (blk.0 has it)");
});

Deno.test("models inspect builds the tokenizer: a vocabulary of another size is not supported", async () => {
  const path = await editedGGUF(`${FIXTURES}/models/tiny-f32.gguf`, {
    metadata: (m) =>
      m.map((e) => {
        const v = e.value as GGUFArray;
        return e.key.startsWith("tokenizer.ggml.") && v?.values?.length === 300
          ? { ...e, value: { ...v, values: v.values.slice(0, 299) } as GGUFArray }
          : e;
      }),
  });
  try {
    const out = await llmctlJson(["models", "inspect", path, "--json"]);
    assertEquals(out.model, {
      architecture: "llama",
      supported: false,
      error: "tokenizer: the tokenizer lists 299 tokens but token_embd.weight has 300 rows",
    });
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("models inspect prints what a file says, never a control sequence for the terminal", async () => {
  // GGUF keys, values and tensor names were printed raw: clear-screen, window-title and colour
  // sequences reached the terminal, and the columns shifted.
  const evil = "x\x1b[2J\x1b]0;owned\x07y";
  const path = await editedGGUF(`${FIXTURES}/models/tiny-f32.gguf`, {
    metadata: (
      m,
    ) => [...m.filter((e) => e.key !== "general.name"), meta.string("general.name", evil)],
  });
  try {
    const r = await llmctl(["models", "inspect", path]);
    assertEquals(r.code, 0, r.stderr);
    assert(!r.stdout.includes("\x1b[2J") && !r.stdout.includes("\x07"), r.stdout.slice(0, 300));
    assert(r.stdout.includes("x\\x1b[2J\\x1b]0;owned\\x07y"), r.stdout.slice(0, 2000));
  } finally {
    await Deno.remove(path);
  }
});
