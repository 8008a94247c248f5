/**
 * LongRoPE (phi3 with `rope_factors_long.weight` / `rope_factors_short.weight` and
 * `rope.scaling.attn_factor`: Phi-3 mini 128k, Phi-3.5 mini, Phi-4 mini): θ of pair i divided by
 * factor i of the set llama.cpp picks for the session's context, cos and sin times the attention
 * factor. Checked against llama.cpp's own logits for the phi3 fixture with LongRoPE added
 * (tests/model/golden/longrope_*.json say how they were made): a context within the original one
 * (short factors), one past it (long factors), and one shaped like Phi-4 mini (partial rotary,
 * tied embeddings). Before, such files were refused at load.
 */
import { createReferenceBackend } from "../../kernels/reference/mod.ts";
import type { Backend } from "../../kernels/backend.ts";
import { GGMLType } from "../../kernels/quant/types.ts";
import { openGGUF } from "../../model/gguf/mod.ts";
import { meta } from "../../model/gguf/writer.ts";
import type { GGUFTensorInput } from "../../model/gguf/writer.ts";
import { LlamaStage, type Session } from "../../model/llama.ts";
import {
  configFromFile,
  formatModelSummary,
  ModelConfigError,
  summarizeModel,
} from "../../model/config.ts";
import { usesLongFactors } from "../../model/rope_factors.ts";
import { argmax } from "../../model/sampler.ts";
import { FIXTURES } from "../support/paths.ts";
import { assert, assertEquals, assertRejects } from "../support/assert.ts";
import { editedGGUF } from "../support/gguf_edit.ts";
import { everyBackend } from "../support/backends.ts";

/** One golden: the LongRoPE keys and tensors added to phi3-f32.gguf, and llama.cpp's logits. */
interface Golden {
  original_context_length: number;
  /** Partial rotary (Phi-4 mini): phi3.rope.dimension_count; absent: the head size. */
  rope_dimension_count?: number;
  /** output.weight removed: the logits come from token_embd (Phi-4 mini). */
  tied?: boolean;
  long_factors: number[];
  short_factors: number[];
  attn_factor: number;
  ctx: number;
  tokens: number[];
  greedy: number;
  logits: number[];
}

const read = async (name: string) =>
  JSON.parse(
    await Deno.readTextFile(new URL(`./golden/longrope_${name}_phi3-f32.json`, import.meta.url)),
  ) as Golden;
const goldens: Record<string, Golden> = {
  short: await read("short"),
  long: await read("long"),
  partial_tied: await read("partial_tied"),
};

const TOLERANCE = 1e-3;

const f32Tensor = (name: string, v: ArrayLike<number>): GGUFTensorInput => ({
  name,
  dims: [v.length],
  type: GGMLType.F32,
  data: new Uint8Array(Float32Array.from(v).buffer),
});

/**
 * A copy of the phi3 fixture with golden `g`'s LongRoPE added: the keys
 * phi3.rope.scaling.original_context_length and attn_factor, the two factor tensors (`tensors`
 * rewrites them for the refusal cases), and for the Phi-4 mini shape partial rotary and no
 * output.weight.
 */
export function withLongRope(
  g: Golden,
  edit: {
    attnFactor?: number | null;
    originalContext?: number;
    tensors?: (t: GGUFTensorInput[]) => GGUFTensorInput[];
  } = {},
): Promise<string> {
  const dropped = new Set(["phi3.rope.dimension_count"]);
  return editedGGUF(`${FIXTURES}/models/phi3-f32.gguf`, {
    metadata: (m) => {
      const dims = m.find((e) => e.key === "phi3.rope.dimension_count")!;
      const attn = edit.attnFactor === undefined ? g.attn_factor : edit.attnFactor;
      return [
        ...m.filter((e) => !dropped.has(e.key)),
        g.rope_dimension_count ? meta.u32(dims.key, g.rope_dimension_count) : dims,
        meta.u32(
          "phi3.rope.scaling.original_context_length",
          edit.originalContext ?? g.original_context_length,
        ),
        ...(attn === null ? [] : [meta.f32("phi3.rope.scaling.attn_factor", attn)]),
      ];
    },
    tensors: (t) => {
      const factors = [
        f32Tensor("rope_factors_long.weight", g.long_factors),
        f32Tensor("rope_factors_short.weight", g.short_factors),
      ];
      const kept = t.filter((x) => !(g.tied && x.name === "output.weight"));
      return [...kept, ...(edit.tensors ? edit.tensors(factors) : factors)];
    },
  });
}

/** Largest |logit − golden's|. */
function worst(logits: Float32Array, g: Golden): number {
  let w = 0;
  for (let i = 0; i < g.logits.length; i++) w = Math.max(w, Math.abs(logits[i] - g.logits[i]));
  return w;
}

/** The last row's logits of `g`'s prompt in a session of `nCtx` positions on `stage`. */
async function logitsOf(stage: LlamaStage, g: Golden, nCtx = g.ctx): Promise<Float32Array> {
  const session = stage.newSession(nCtx, "f32");
  try {
    const out = await stage.forward(session, { tokens: Int32Array.from(g.tokens) });
    assert("logits" in out);
    return out.logits;
  } finally {
    stage.endSession(session);
  }
}

/** Run `fn` with `path` loaded as one stage on `be`; the file is removed afterwards. */
async function withStage<T>(
  path: string,
  be: Backend,
  fn: (stage: LlamaStage) => Promise<T>,
): Promise<T> {
  const file = await openGGUF(path);
  try {
    const stage = await LlamaStage.load(file, be);
    try {
      return await fn(stage);
    } finally {
      stage.dispose();
    }
  } finally {
    file.close();
    await Deno.remove(path);
  }
}

const backends = everyBackend();

for (const [name, make, ignore] of backends) {
  Deno.test({
    name: `longrope: ${name} matches llama.cpp's logits, short and long factors and the Phi-4 ` +
      `mini shape (within the f32 tolerance 1e-3)`,
    ignore,
    async fn() {
      const be = await make();
      try {
        for (const [which, g] of Object.entries(goldens)) {
          const logits = await withStage(await withLongRope(g), be, (s) => logitsOf(s, g));
          const w = worst(logits, g);
          assert(w <= TOLERANCE, `${which}: max |logit − llama.cpp's| = ${w}`);
          assertEquals(argmax(logits), g.greedy, which);
        }
      } finally {
        be.dispose();
      }
    },
  });
}

Deno.test("longrope: without the attention factor or with the other set the logits are far off", async () => {
  // What the goldens guard against: each mistake moves the logits by hundreds of tolerances.
  const be = createReferenceBackend();
  const { short, long } = goldens;
  const noAttn = await withStage(
    await withLongRope(long, { attnFactor: null }),
    be,
    (s) => logitsOf(s, long),
  );
  assert(worst(noAttn, long) > 0.5, `without attn_factor: ${worst(noAttn, long)} off`);
  const none = await withStage(
    await withLongRope(long, { tensors: () => [] }),
    be,
    (s) => logitsOf(s, long),
  );
  assert(worst(none, long) > 0.5, `without factors: ${worst(none, long)} off`);
  // The two goldens differ only in the original context, i.e. in the set llama.cpp picked.
  let apart = 0;
  for (let i = 0; i < short.logits.length; i++) {
    apart = Math.max(apart, Math.abs(short.logits[i] - long.logits[i]));
  }
  assert(apart > 0.5, `short vs long factors: ${apart} apart`);
});

Deno.test("longrope: each session picks its set by its own context, as llama.cpp by its context", async () => {
  const be = createReferenceBackend();
  const { short, long } = goldens;
  // The short golden's file (original context 256): a session of 64 positions is within it, one
  // of 300 is past it and rotates as llama.cpp did with original context 32 (the long golden).
  await withStage(await withLongRope(short), be, async (stage) => {
    assert(worst(await logitsOf(stage, short, 64), short) <= TOLERANCE);
    assert(worst(await logitsOf(stage, long, 300), long) <= TOLERANCE);
    // Both in one batch: the sets run as separate passes, each row as when alone.
    const a = stage.newSession(64, "f32");
    const b = stage.newSession(300, "f32");
    const tokens = Int32Array.from(short.tokens);
    const [oa, ob] = await stage.forwardBatch([
      { session: a, input: { tokens } },
      { session: b, input: { tokens } },
    ]);
    assert("logits" in oa && "logits" in ob);
    assert(worst(oa.logits, short) <= TOLERANCE, `batched short: ${worst(oa.logits, short)}`);
    assert(worst(ob.logits, long) <= TOLERANCE, `batched long: ${worst(ob.logits, long)}`);
    stage.endSession(a);
    stage.endSession(b);
  });
  // llama.cpp rounds its context up to a multiple of 256 before comparing: with original
  // context 100, its context 64 (256) is past it, and so is a session of 64 here.
  await withStage(await withLongRope(long, { originalContext: 100 }), be, async (stage) => {
    assert(usesLongFactors(stage.config, 64));
    assert(worst(await logitsOf(stage, long, 64), long) <= TOLERANCE);
  });
  const c = { ...(await configOf(short)), ropeOrigContext: 4096 };
  assertEquals([4096, 4097, 8192].map((n) => usesLongFactors(c, n)), [false, true, true]);
});

/** The config of golden `g`'s file. */
async function configOf(g: Golden) {
  const path = await withLongRope(g);
  const file = await openGGUF(path);
  try {
    return configFromFile(file);
  } finally {
    file.close();
    await Deno.remove(path);
  }
}

Deno.test("longrope: two stages of a pipeline give the logits of one", async () => {
  const be = createReferenceBackend();
  const g = goldens.long;
  const path = await withLongRope(g);
  const file = await openGGUF(path);
  try {
    const head = await LlamaStage.load(file, be, { from: 0, to: 1 });
    const tail = await LlamaStage.load(file, be, { from: 1, to: 2 });
    // Each stage's session of the same context: both pick the long set.
    const [sh, st] = [head.newSession(g.ctx, "f32"), tail.newSession(g.ctx, "f32")];
    assertEquals(head.ropeFactorsOf(sh).set, "long");
    assertEquals(tail.ropeFactorsOf(st).set, "long");
    const mid = await head.forward(sh, { tokens: Int32Array.from(g.tokens) });
    assert("hidden" in mid);
    const out = await tail.forward(st, { hidden: mid.hidden, nTokens: g.tokens.length });
    assert("logits" in out);
    assert(worst(out.logits, g) <= TOLERANCE, `split: ${worst(out.logits, g)}`);
    head.dispose();
    tail.dispose();
  } finally {
    file.close();
    await Deno.remove(path);
  }
});

Deno.test("longrope: the prefix cache restores a block only into a session of the same set", async () => {
  const be = createReferenceBackend();
  const { short, long } = goldens;
  await withStage(await withLongRope(short), be, async (stage) => {
    stage.enablePrefixCache(1 << 20);
    const ids = Int32Array.from(short.tokens);
    const run = async (nCtx: number) => {
      const s: Session = stage.newSession(nCtx, "f32");
      const restored = stage.restorePrefix(s, ids);
      const out = await stage.forward(
        s,
        { tokens: ids.subarray(restored) },
        ids.subarray(restored),
      );
      stage.endSession(s);
      assert("logits" in out);
      return { restored, logits: out.logits };
    };
    assertEquals((await run(64)).restored, 0);
    const again = await run(64);
    assertEquals(again.restored, 32);
    assert(worst(again.logits, short) <= TOLERANCE);
    // A block rotated with the short factors is no prefix of a long-factor session.
    const other = await run(300);
    assertEquals(other.restored, 0);
    assert(
      worst(other.logits, long) <= TOLERANCE,
      `long after short: ${worst(other.logits, long)}`,
    );
  });
});

Deno.test("longrope: a factor tensor of the wrong size, type or values, or alone, is refused by name", async () => {
  const be = createReferenceBackend();
  const g = goldens.short;
  const long = (v: number[]) => (t: GGUFTensorInput[]) => [
    f32Tensor("rope_factors_long.weight", v),
    t[1],
  ];
  const f16 = { name: "rope_factors_long.weight", dims: [8], type: GGMLType.F16 };
  const cases: [Parameters<typeof withLongRope>[1], string][] = [
    [
      { tensors: long(g.long_factors.slice(1)) },
      "tensor rope_factors_long.weight is F32 [7], expected F32 [8]",
    ],
    [
      { tensors: (t) => [t[0], f32Tensor("rope_factors_short.weight", [...g.short_factors, 1])] },
      "tensor rope_factors_short.weight is F32 [9], expected F32 [8]",
    ],
    [
      { tensors: (t) => [{ ...f16, data: new Uint8Array(16).fill(0x3c) }, t[1]] },
      "tensor rope_factors_long.weight is F16 [8], expected F32 [8]",
    ],
    [{ tensors: long([...g.long_factors.slice(0, 7), 0]) }, "rope_factors_long.weight[7] is 0"],
    [{ tensors: long([1, NaN, 1, 1, 1, 1, 1, 1]) }, "rope_factors_long.weight[1] is NaN"],
    [
      { tensors: (t) => [t[0]] },
      "tensor rope_factors_long.weight is present but rope_factors_short.weight is not",
    ],
    [
      { tensors: (t) => [t[1]] },
      "tensor rope_factors_short.weight is present but rope_factors_long.weight is not",
    ],
    [{ attnFactor: 0 }, "rope.scaling.attn_factor 0 is not a positive number"],
  ];
  for (const [edit, message] of cases) {
    const path = await withLongRope(g, edit);
    const file = await openGGUF(path);
    try {
      await assertRejects(() => LlamaStage.load(file, be), ModelConfigError, message);
    } finally {
      file.close();
      await Deno.remove(path);
    }
  }
});

Deno.test("longrope: llmctl models inspect's summary names it with its original context", async () => {
  const path = await withLongRope(goldens.short);
  const file = await openGGUF(path);
  try {
    const s = summarizeModel(file);
    assertEquals(s.long_rope, { original_context: 256, attn_factor: goldens.short.attn_factor });
    assertEquals(
      formatModelSummary(s),
      "phi3, 2 layers, LongRoPE (original context 256, attn factor 1.19024)",
    );
  } finally {
    file.close();
    await Deno.remove(path);
  }
});
