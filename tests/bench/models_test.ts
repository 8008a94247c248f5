/** The bench's generated mixes: llama-quantize's type choices, fallbacks and tied outputs. */
import { kmType, mixTypes } from "../../bench/lib/models.ts";
import { GGMLType } from "../../kernels/quant/mod.ts";
import { assertEquals } from "../support/assert.ts";

/** A qwen2 of Qwen2.5-0.5B's shape (24 layers, n_embd 896, n_ff 4864, 2 KV heads, tied output). */
function qwen05b(): { name: string; dims: number[] }[] {
  const t = [{ name: "token_embd.weight", dims: [896, 151936] }];
  for (let i = 0; i < 24; i++) {
    t.push(
      { name: `blk.${i}.attn_norm.weight`, dims: [896] },
      { name: `blk.${i}.attn_q.weight`, dims: [896, 896] },
      { name: `blk.${i}.attn_k.weight`, dims: [896, 128] },
      { name: `blk.${i}.attn_v.weight`, dims: [896, 128] },
      { name: `blk.${i}.attn_q.bias`, dims: [896] },
      { name: `blk.${i}.attn_output.weight`, dims: [896, 896] },
      { name: `blk.${i}.ffn_gate.weight`, dims: [896, 4864] },
      { name: `blk.${i}.ffn_up.weight`, dims: [896, 4864] },
      { name: `blk.${i}.ffn_down.weight`, dims: [4864, 896] },
    );
  }
  t.push({ name: "output_norm.weight", dims: [896] });
  return t;
}

Deno.test("bench Q4_K_M of a Qwen2.5-0.5B shape: 896-wide rows fall back (Q4_K → Q5_0, Q6_K → Q8_0), the tied embeddings take the output's type", () => {
  const types = new Map(
    mixTypes(qwen05b(), 24, (name, n) => kmType(GGMLType.Q4_K, name, n)).map((
      t,
    ) => [t.name, t.type]),
  );
  // the output's Q6_K, on 896-wide rows: Q8_0 (llama-quantize's own rule gives the same)
  assertEquals(types.get("token_embd.weight"), GGMLType.Q8_0);
  assertEquals(types.get("blk.5.attn_q.weight"), GGMLType.Q5_0);
  assertEquals(types.get("blk.5.ffn_gate.weight"), GGMLType.Q5_0);
  assertEquals(types.get("blk.5.attn_output.weight"), GGMLType.Q5_0);
  // use_more_bits: the first and last eighth of the layers, and every third between
  assertEquals(types.get("blk.0.attn_v.weight"), GGMLType.Q8_0);
  assertEquals(types.get("blk.4.attn_v.weight"), GGMLType.Q5_0);
  assertEquals(types.get("blk.5.attn_v.weight"), GGMLType.Q8_0);
  // ffn_down's rows are 4864 wide (19 × 256): no fallback
  assertEquals(types.get("blk.0.ffn_down.weight"), GGMLType.Q6_K);
  assertEquals(types.get("blk.4.ffn_down.weight"), GGMLType.Q4_K);
  assertEquals(types.get("blk.23.ffn_down.weight"), GGMLType.Q6_K);
  assertEquals(types.get("blk.3.attn_norm.weight"), GGMLType.F32);
  assertEquals(types.get("blk.3.attn_q.bias"), GGMLType.F32);
});

Deno.test("bench Q4_K_M of a llama with its own output: token_embd keeps the base type, output Q6_K", () => {
  const tensors = [
    { name: "token_embd.weight", dims: [2048, 32000] },
    { name: "blk.0.attn_q.weight", dims: [2048, 2048] },
    { name: "output.weight", dims: [2048, 32000] },
  ];
  const types = mixTypes(tensors, 22, (name, n) => kmType(GGMLType.Q4_K, name, n)).map((t) =>
    t.type
  );
  assertEquals(types, [GGMLType.Q4_K, GGMLType.Q4_K, GGMLType.Q6_K]);
});

Deno.test("bench Q4_K_M of a Gemma 3 1B shape: only matrices whose rows are 1152 wide fall back", () => {
  const tensors = [
    { name: "token_embd.weight", dims: [1152, 32000] },
    { name: "blk.3.attn_q.weight", dims: [1152, 1024] },
    { name: "blk.3.attn_output.weight", dims: [1024, 1152] },
    { name: "blk.3.ffn_down.weight", dims: [6912, 1152] },
    { name: "blk.3.ffn_up.weight", dims: [1152, 6912] },
  ];
  const types = mixTypes(tensors, 26, (name, n) => kmType(GGMLType.Q4_K, name, n)).map((t) =>
    t.type
  );
  assertEquals(types, [
    GGMLType.Q8_0, // the tied output's Q6_K on 1152-wide rows
    GGMLType.Q5_0,
    GGMLType.Q4_K, // 1024-wide rows hold Q4_K
    GGMLType.Q4_K, // 6912 = 27 × 256
    GGMLType.Q5_0,
  ]);
});
