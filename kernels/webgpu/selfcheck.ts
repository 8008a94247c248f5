/**
 * The startup self-check of the optional shader paths (features.ts): one small layer — a
 * decode and a prompt matmul of every weight type, an RMSNorm, sampling candidates — on fixed
 * inputs, through the fallback path and then through the candidate path, on the same device.
 * A path is used only when it compiles and its results match. Both paths are built to give the
 * same sums in the same order (bit for bit); {@link SELF_CHECK_TOLERANCE} leaves an ulp of room
 * for a compiler's instruction choice and is far inside the goldens' 1e-3 on logits
 * (../shared/fixtures/README.md), since one op's error grows over a model's layers.
 * {@link checkCpuKernels} does the same for the `cpuKernels` option (kernels shaped for
 * CPU-run adapters) against the kernels they replace.
 *
 * @module
 */
import type { Backend, Buf, TopCandidates, Weight } from "../backend.ts";
import { GGMLType, quantizeRow, typeName, WEIGHT_TYPES } from "../quant/mod.ts";
import {
  FALLBACK_PATHS,
  type FeatureMode,
  type FeatureOutcome,
  modeAllows,
  OPTIONAL_FEATURES,
  type ShaderFeatureReport,
  type ShaderPaths,
  subgroupPrelude,
} from "./features.ts";

/** Largest |candidate − fallback| / max(1, |fallback|) accepted. */
export const SELF_CHECK_TOLERANCE = 1e-6;

/** Every weight type matmul decodes: each one's decode section is checked. */
export const SELF_CHECK_TYPES: readonly GGMLType[] = WEIGHT_TYPES;

/** Row length (two K-quant super-blocks) and weight rows (a partial workgroup at the end). */
const K = 512;
const ROWS = 80;
const PROMPT = 3;
const VOCAB = 1000;

/** The self-check's verdict on one candidate path. */
export interface SelfCheckResult {
  readonly ok: boolean;
  /** The largest difference, or why the path failed (compile error, mismatch). */
  readonly detail: string;
}

/** Seeded floats in [-scale, scale) (xorshift32: the same inputs on every machine). */
function floats(n: number, seed: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = (s / 2 ** 32 * 2 - 1) * scale;
  }
  return out;
}

interface Layer {
  readonly weights: Weight[];
  readonly norm: Weight;
  readonly x1: Buf;
  readonly x3: Buf;
  readonly logits: Buf;
  readonly outs: Buf[];
}

function setUp(be: Backend, types: readonly GGMLType[]): Layer {
  const weights = types.map((type, i) => {
    const w = floats(K * ROWS, 101 + i);
    // Two rows of tiny values: half-precision subnormals (F16) and subnormal block scales, which
    // a GPU flushing half subnormals converts differently.
    for (let j = 0; j < 2 * K; j++) w[j] *= 5e-4;
    const data = quantizeRow(type, w, K * ROWS);
    return be.upload({ name: `self-check ${typeName(type)}`, type, shape: [K, ROWS], data });
  });
  const norm = be.upload({
    name: "self-check norm",
    type: GGMLType.F32,
    shape: [K],
    data: new Uint8Array(floats(K, 7, 2).buffer),
  });
  const x1 = be.buffer(K);
  be.write(x1, floats(K, 11));
  const x3 = be.buffer(PROMPT * K);
  be.write(x3, floats(PROMPT * K, 13, 3));
  // Logits with ties (values on a coarse grid), so candidate order by id is exercised too.
  const logits = be.buffer(2 * VOCAB);
  be.write(logits, floats(2 * VOCAB, 17, 8).map((v) => Math.round(v * 4) / 4));
  const outs = [];
  for (let i = 0; i < types.length; i++) outs.push(be.buffer(ROWS), be.buffer(PROMPT * ROWS));
  outs.push(be.buffer(PROMPT * K));
  return { weights, norm, x1, x3, logits, outs };
}

/** The layer's outputs: matmul and norm rows, then the candidates' ids and values. */
async function run(be: Backend, l: Layer): Promise<Float32Array[]> {
  l.weights.forEach((w, i) => {
    be.matmul(w, l.x1, l.outs[2 * i], 1);
    be.matmul(w, l.x3, l.outs[2 * i + 1], PROMPT);
  });
  const normOut = l.outs[l.outs.length - 1];
  be.rmsNorm(l.x3, l.norm, normOut, PROMPT, 1e-5);
  const got: Float32Array[] = [];
  for (const o of l.outs) got.push(await be.read(o));
  const top: TopCandidates[] = await be.topCandidates!(
    l.logits,
    2,
    VOCAB,
    16,
    [Int32Array.of(5, 900, 17), new Int32Array(0)],
  );
  for (const t of top) {
    got.push(Float32Array.from(t.ids), t.values, t.excluded, Float32Array.of(t.max, t.sumExp));
  }
  return got;
}

/** Largest relative difference of two output lists (Infinity on a length or NaN mismatch). */
export function maxDifference(a: readonly Float32Array[], b: readonly Float32Array[]): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    if (a[i].length !== b[i].length) return Infinity;
    for (let j = 0; j < a[i].length; j++) {
      const e = Math.abs(a[i][j] - b[i][j]) / Math.max(1, Math.abs(b[i][j]));
      if (!(e <= m)) m = Number.isNaN(e) ? Infinity : e;
    }
  }
  return m;
}

/** A compiler message in one line: its first line and Naga's `= …` note (the actual cause). */
function firstLine(msg: string): string {
  const lines = msg.split("\n").map((s) => s.trim()).filter((s) => s);
  const note = lines.find((s) => s.startsWith("= "));
  const line = (lines[0] ?? msg) + (note ? ` (${note.slice(2)})` : "");
  return line.length > 200 ? line.slice(0, 197) + "…" : line;
}

/**
 * Run `fn` inside validation and internal error scopes: its result, or the first error the device
 * or the call reported (a shader that does not compile, a pipeline the device refuses).
 */
async function scoped<T>(
  dev: GPUDevice,
  fn: () => Promise<T>,
): Promise<{ got?: T; err?: { message: string } }> {
  dev.pushErrorScope("validation");
  dev.pushErrorScope("internal");
  let got: T | undefined;
  let thrown: Error | undefined;
  try {
    got = await fn();
  } catch (e) {
    thrown = e as Error;
  }
  const internal = await dev.popErrorScope();
  const validation = await dev.popErrorScope();
  const err = validation ?? internal ?? thrown;
  return err ? { err } : { got };
}

/**
 * Run the layer through the fallback path, then through `candidate` (switched with `use`), and
 * compare. Errors of the candidate (a shader that does not compile, a pipeline the device
 * refuses) are caught in error scopes and make the result "failed". Leaves the fallback paths on.
 */
export async function selfCheck(
  be: Backend,
  dev: GPUDevice,
  use: (paths: ShaderPaths) => void,
  candidate: ShaderPaths,
  types: readonly GGMLType[] = SELF_CHECK_TYPES,
): Promise<SelfCheckResult> {
  const l = setUp(be, types);
  try {
    use(FALLBACK_PATHS);
    const want = await run(be, l);
    use(candidate);
    const { got, err } = await scoped(dev, () => run(be, l));
    if (err || !got) {
      return { ok: false, detail: `does not compile or run: ${firstLine(err?.message ?? "")}` };
    }
    const d = maxDifference(got, want);
    return d <= SELF_CHECK_TOLERANCE
      ? { ok: true, detail: `matches the fallback (largest difference ${d.toPrecision(2)})` }
      : { ok: false, detail: `differs from the fallback by ${d.toPrecision(3)}` };
  } finally {
    use(FALLBACK_PATHS);
    for (const h of [...l.weights, l.norm, l.x1, l.x3, l.logits, ...l.outs]) be.free(h);
  }
}

/** Self-check outcomes per adapter, device features and mode: each is checked (and logged) once. */
const CHECKED = new Map<string, { paths: ShaderPaths; report: ShaderFeatureReport }>();

/**
 * Decide the shader paths of a new backend: for each optional feature the device was granted
 * and `mode` allows, run {@link selfCheck}; then both together when both pass. Cached per
 * process for the same adapter, features, mode and `kernels` (the backend's kernel choices,
 * e.g. lanes and tiling, which decide the shaders the check ran).
 */
export async function chooseShaderPaths(
  be: Backend,
  dev: GPUDevice,
  use: (paths: ShaderPaths) => void,
  adapter: GPUAdapter,
  mode: FeatureMode,
  kernels: string,
): Promise<{ paths: ShaderPaths; report: ShaderFeatureReport }> {
  const granted = OPTIONAL_FEATURES.filter((f) => dev.features.has(f));
  const key = `${adapter.info.description}|${adapter.info.vendor}|${granted}|${mode}|${kernels}`;
  const hit = CHECKED.get(key);
  if (hit) return hit;
  const outcomes: FeatureOutcome[] = [];
  let paths = FALLBACK_PATHS;
  for (const feature of OPTIONAL_FEATURES) {
    if (!granted.includes(feature)) {
      outcomes.push({ feature, state: "not offered", detail: "" });
      continue;
    }
    if (!modeAllows(mode, feature)) {
      outcomes.push({ feature, state: "off", detail: `DLLM_WEBGPU_FEATURES=${mode}` });
      continue;
    }
    let candidate: ShaderPaths | string;
    if (feature === "shader-f16") {
      candidate = { ...FALLBACK_PATHS, f16: true };
    } else {
      candidate = await subgroupPaths(dev, adapter);
    }
    const r = typeof candidate === "string"
      ? { ok: false, detail: candidate }
      : await selfCheck(be, dev, use, candidate);
    outcomes.push({ feature, state: r.ok ? "enabled" : "failed", detail: r.detail });
    if (r.ok && typeof candidate !== "string") {
      paths = feature === "shader-f16" ? { ...paths, f16: true } : { ...candidate, f16: paths.f16 };
    }
  }
  if (paths.f16 && paths.subgroups) {
    const both = await selfCheck(be, dev, use, paths);
    if (!both.ok) {
      paths = { ...FALLBACK_PATHS, f16: true };
      const i = outcomes.findIndex((o) => o.feature === "subgroups");
      outcomes[i] = { feature: "subgroups", state: "failed", detail: `with f16: ${both.detail}` };
    }
  }
  use(paths);
  const active = outcomes.filter((o) => o.state === "enabled").map((o) => o.feature);
  const result = { paths, report: { mode, granted, active, outcomes } };
  CHECKED.set(key, result);
  return result;
}

/** The subgroup candidate for this adapter, or why there is none. */
async function subgroupPaths(dev: GPUDevice, adapter: GPUAdapter): Promise<ShaderPaths | string> {
  const min = (adapter.info as GPUAdapterInfo & { subgroupMinSize?: number }).subgroupMinSize;
  // Shuffle steps narrower than the smallest subgroup; a workgroup is 64 lanes.
  if (!min || min < 2 || (min & (min - 1)) !== 0) {
    return `the adapter reports subgroupMinSize ${min}, not a power of two ≥ 2`;
  }
  const prelude = await subgroupPrelude(dev);
  if (prelude === null) return "no subgroup shader compiles on this device";
  return {
    f16: false,
    subgroups: true,
    subgroupMinSize: Math.min(min, 64),
    subgroupEnable: prelude,
  };
}

/** Outcomes of {@link checkCpuKernels} per adapter and kernel choices: each is run once. */
const CPU_CHECKED = new Map<string, SelfCheckResult>();

/**
 * The startup check of the `cpuKernels` option: Q8_0 matmuls (a decode row, and prompts of 3
 * and 9 rows, each taking another token tile of matmul_cpu.wgsl, over a partial last tile of
 * weight rows) and attention over an f32 cache (a 5-row prompt then a decode step), first
 * through the kernels they replace, then through the CPU-shaped ones (switched with `use`).
 * They are built to give the same bits; a compile error or any difference beyond
 * {@link SELF_CHECK_TOLERANCE} leaves them off. Leaves `use(false)` on failure.
 */
export async function checkCpuKernels(
  be: Backend,
  dev: GPUDevice,
  use: (on: boolean) => void,
  adapter: GPUAdapter,
  kernels: string,
): Promise<SelfCheckResult> {
  const key = `${adapter.info.description}|${adapter.info.vendor}|${kernels}`;
  const hit = CPU_CHECKED.get(key);
  if (hit) {
    use(hit.ok);
    return hit;
  }
  const type = GGMLType.Q8_0;
  const w = be.upload({
    name: "self-check Q8_0",
    type,
    shape: [K, ROWS],
    data: quantizeRow(type, floats(K * ROWS, 201), K * ROWS),
  });
  const x = be.buffer(9 * K);
  be.write(x, floats(9 * K, 203, 3));
  const outs = [1, 3, 9].map((rows) => be.buffer(rows * ROWS));
  const [heads, dim] = [4, 16];
  const kv = floats(6 * heads * dim, 207);
  const q = floats(6 * heads * dim, 209, 2);
  const bufs = [kv, q].map((v) => {
    const b = be.buffer(v.length);
    be.write(b, v);
    return b;
  });
  const att = be.buffer(6 * heads * dim);
  const layer = async (): Promise<Float32Array[]> => {
    const got: Float32Array[] = [];
    [1, 3, 9].forEach((rows, i) => be.matmul(w, x, outs[i], rows));
    for (const o of outs) got.push(await be.read(o));
    const cache = be.kvCache(1, 8, heads * dim, "f32");
    const params = { nHeads: heads, nKVHeads: heads, headDim: dim, scale: 0.25 };
    be.storeKV(cache, 0, bufs[0], bufs[0], 0, 5);
    be.attention(bufs[1], cache, 0, att, 0, 5, params);
    be.storeKV(cache, 0, bufs[0], bufs[0], 5, 1, 5);
    be.attention(bufs[1], cache, 0, att, 5, 1, params, 5);
    got.push(await be.read(att));
    be.free(cache);
    return got;
  };
  let result: SelfCheckResult;
  try {
    use(false);
    const want = await layer();
    use(true);
    const { got, err } = await scoped(dev, layer);
    if (err || !got) {
      result = { ok: false, detail: `does not compile or run: ${firstLine(err?.message ?? "")}` };
    } else {
      const d = maxDifference(got, want);
      result = d <= SELF_CHECK_TOLERANCE
        ? { ok: true, detail: `match the kernels they replace (largest difference ${d})` }
        : { ok: false, detail: `differ from the kernels they replace by ${d.toPrecision(3)}` };
    }
  } finally {
    for (const h of [w, x, ...outs, ...bufs, att]) be.free(h);
  }
  use(result.ok);
  CPU_CHECKED.set(key, result);
  return result;
}
