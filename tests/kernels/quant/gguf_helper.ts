/** Fixture tensors and seeded random data for the kernel tests. */
import { openGGUF } from "../../../model/gguf/mod.ts";
import { Rng } from "../../../model/sampler.ts";

export interface TestTensor {
  name: string;
  type: number;
  shape: number[];
  data: Uint8Array;
}

export const FIXTURES = new URL("../../../../shared/fixtures/models/", import.meta.url);

/** Every tensor of a fixture GGUF file, by name (read with the project's GGUF reader). */
export async function readTensors(file: string): Promise<Map<string, TestTensor>> {
  const gguf = await openGGUF(new URL(file, FIXTURES));
  try {
    const out = new Map<string, TestTensor>();
    for (const t of gguf.tensors) {
      out.set(t.name, {
        name: t.name,
        type: t.type,
        shape: [...t.dims],
        data: await gguf.readTensor(t),
      });
    }
    return out;
  } finally {
    gguf.close();
  }
}

/** The f32 values of an F32 tensor. */
export function f32Values(t: TestTensor): Float32Array {
  return new Float32Array(t.data.buffer, t.data.byteOffset, t.data.byteLength / 4);
}

/** Deterministic PRNG returning floats in [0, 1) (the sampler's seeded Rng). */
export function rng(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.next();
}

/** `n` floats, roughly normal(0, scale), from a seeded PRNG. */
export function randomFloats(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = r() || 1e-9;
    out[i] = scale * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * r());
  }
  return out;
}
