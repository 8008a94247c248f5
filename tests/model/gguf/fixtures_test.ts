// Opens every GGUF fixture and checks it against ../shared/fixtures/MANIFEST.json; rewriting each
// one with the writer must reproduce the file byte for byte.
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { typeName } from "../../../kernels/quant/types.ts";
import { GGUFValueType, openGGUF, writeGGUF } from "../../../model/gguf/mod.ts";
import { FIXTURES as FIXTURES_DIR } from "../../support/paths.ts";

const FIXTURES = new URL(`file://${FIXTURES_DIR}/`);

interface ModelEntry {
  bytes: number;
  arch: string;
  n_tensors: number;
  tensor_types: Record<string, string>;
  n_vocab: number;
  tokenizer_model: string;
  tokenizer_pre?: string;
  eos_token_id: number;
  file_type?: number;
  hparams: Record<string, number>;
}
interface Manifest {
  models: Record<string, ModelEntry>;
  vocab: { gguf: string; bytes: number }[];
}

const manifest: Manifest = JSON.parse(
  await Deno.readTextFile(new URL("MANIFEST.json", FIXTURES)),
);
// The newer architectures' models (qwen3, qwen3moe, gemma3, phi3) have their own manifest.
const archManifest: Pick<Manifest, "models"> = JSON.parse(
  await Deno.readTextFile(new URL("MANIFEST-arch.json", FIXTURES)),
);
const allModels: Record<string, ModelEntry> = { ...manifest.models, ...archManifest.models };

function ggufFiles(dir: string): string[] {
  return [...Deno.readDirSync(new URL(dir, FIXTURES))]
    .filter((e) => e.name.endsWith(".gguf"))
    .map((e) => e.name)
    .sort();
}

Deno.test("every model fixture is listed in MANIFEST.json or MANIFEST-arch.json and vice versa", () => {
  assertEquals(ggufFiles("models/"), Object.keys(allModels).sort());
  assertEquals(
    ggufFiles("vocab/").map((n) => `vocab/${n}`),
    manifest.vocab.map((v) => v.gguf).sort(),
  );
});

for (const [name, m] of Object.entries(allModels)) {
  Deno.test(`models/${name} matches its manifest`, async () => {
    const f = await openGGUF(new URL(`models/${name}`, FIXTURES));
    try {
      assertEquals(f.fileSize, m.bytes);
      assertEquals(f.version, 3);
      assertEquals(f.architecture, m.arch);
      assertEquals(f.tensors.length, m.n_tensors);
      const types = Object.fromEntries(f.tensors.map((t) => [t.name, typeName(t.type)]));
      const want = Object.fromEntries(
        Object.entries(m.tensor_types).map(([k, v]) => [k, v.toUpperCase()]),
      );
      assertEquals(
        Object.fromEntries(Object.entries(types).map(([k, v]) => [k, v.toUpperCase()])),
        want,
      );
      const md = f.metadata;
      for (const [k, v] of Object.entries(m.hparams)) {
        if (k === "vocab_size") continue; // not a GGUF key: the manifest derives it from the vocab
        assertEquals(md.number(`${m.arch}.${k}`), v, k);
      }
      if (m.file_type !== undefined) assertEquals(md.number("general.file_type"), m.file_type);
      assertEquals(md.stringArray("tokenizer.ggml.tokens").length, m.n_vocab);
      assertEquals(md.string("tokenizer.ggml.model"), m.tokenizer_model);
      if (m.tokenizer_pre) assertEquals(md.string("tokenizer.ggml.pre"), m.tokenizer_pre);
      assertEquals(md.number("tokenizer.ggml.eos_token_id"), m.eos_token_id);

      // Shapes follow from the hyperparameters (GGUF order: dims[0] is the row length); the
      // newer architectures' shapes are checked by loading them (tests/model/golden_arch_test.ts).
      const nEmbd = m.hparams.embedding_length;
      const nFF = m.hparams.feed_forward_length;
      assertEquals(f.tensor("token_embd.weight")!.dims, [nEmbd, m.n_vocab]);
      assertEquals(f.tensor("output_norm.weight")!.dims, [nEmbd]);
      if (name in manifest.models) {
        assertEquals(f.tensor("blk.0.ffn_down.weight")!.dims, [nFF, nEmbd]);
        assertEquals(f.tensor("blk.0.ffn_gate.weight")!.dims, [nEmbd, nFF]);
        assertEquals(f.tensor("blk.0.attn_q.weight")!.dims, [nEmbd, nEmbd]);
      }

      // Tensors are laid out back to back, each aligned, and the last one ends the file.
      let end = 0;
      for (const t of f.tensors) {
        assertEquals(t.offset % f.alignment, 0);
        assert(t.offset >= end, `${t.name} overlaps the previous tensor`);
        end = t.offset + t.nBytes!;
      }
      assertEquals(Math.ceil((f.dataOffset + end) / f.alignment) * f.alignment, f.fileSize);

      // Opening read only the front of the file (header + read-ahead), not the tensors.
      assert(f.bytesRead <= f.dataOffset + 1024 * 1024, `read ${f.bytesRead}`);
    } finally {
      f.close();
    }
  });
}

Deno.test("stories260K metadata values", async () => {
  const f = await openGGUF(new URL("models/stories260K.gguf", FIXTURES));
  try {
    const md = f.metadata;
    assertEquals(md.number("llama.context_length"), 2048);
    assertEquals(md.number("llama.rope.dimension_count"), 8);
    assertEquals(md.number("tokenizer.ggml.bos_token_id"), 1);
    assertEquals(md.number("tokenizer.ggml.eos_token_id"), 2);
    assertEquals(md.number("llama.block_count"), 5);
    assertEquals(md.entry("llama.context_length")!.type, GGUFValueType.UINT32);
    assertEquals(md.number("llama.attention.layer_norm_rms_epsilon"), Math.fround(1e-5));
    const tokens = md.stringArray("tokenizer.ggml.tokens");
    assertEquals(tokens.length, 512);
    assertEquals(tokens.slice(0, 3), ["<unk>", "<s>", "</s>"]);
    assertEquals(md.array("tokenizer.ggml.scores").values.constructor, Float32Array);
    assertEquals(md.numberArray("tokenizer.ggml.token_type").length, 512);
    assertEquals(md.numberOr("llama.rope.freq_base", 10000), 10000);
    assertEquals(f.alignment, 32);
    assertEquals(f.tensors.length, 48);
    const emb = await f.readTensor("token_embd.weight");
    assertEquals(emb.length, 64 * 512 * 4);
  } finally {
    f.close();
  }
});

for (const v of manifest.vocab) {
  Deno.test(`${v.gguf} opens (vocab only, no tensors)`, async () => {
    const f = await openGGUF(new URL(v.gguf, FIXTURES));
    try {
      assertEquals(f.fileSize, v.bytes);
      assertEquals(f.tensors.length, 0);
      const tokens = f.metadata.stringArray("tokenizer.ggml.tokens");
      assert(tokens.length > 1000);
      assertEquals(f.metadata.numberArray("tokenizer.ggml.token_type").length, tokens.length);
    } finally {
      f.close();
    }
  });
}

for (
  const name of [
    ...ggufFiles("models/").map((n) => `models/${n}`),
    ...manifest.vocab.map((v) => v.gguf),
  ]
) {
  Deno.test(`${name}: writer reproduces the file byte for byte`, async () => {
    const url = new URL(name, FIXTURES);
    const f = await openGGUF(url);
    try {
      const tensors = [];
      for (const t of f.tensors) {
        tensors.push({ name: t.name, dims: t.dims, type: t.type, data: await f.readTensor(t) });
      }
      const out = writeGGUF({
        version: f.version as 2 | 3,
        metadata: f.metadata.entries(),
        tensors,
      });
      const orig = await Deno.readFile(url);
      assertEquals(out.length, orig.length);
      assert(out.every((b, i) => b === orig[i]), "bytes differ");
    } finally {
      f.close();
    }
  });
}
