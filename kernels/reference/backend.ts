/**
 * The reference backend: plain TypeScript, one loop per formula, matching ggml's CPU numerics.
 *
 * It is the ground truth other backends are tested against, so it favours being obviously right
 * over being fast. Where ggml computes in float it rounds through `Math.fround`; where it sums in
 * `ggml_float` (double) it sums in a JS number; softmax and SiLU replay ggml's vector expf
 * (ggml_math.ts) and rope glibc's cosf/sinf (libm.ts), so results agree with llama.cpp's plain C
 * kernels bit for bit on the fixtures (libm's powf, behind rope's theta_scale, aside).
 */
import type {
  AttentionParams,
  Backend,
  Buf,
  KVCache,
  KVType,
  RopeParams,
  Weight,
  WeightShape,
  WeightSpec,
  WeightWriter,
} from "../backend.ts";
import {
  checkChunk,
  checkCopyRows,
  checkCounts,
  checkHeads,
  checkKVRange,
  checkRowRange,
  checkStoreKV,
  needElements,
} from "../checks.ts";
import { GGMLType, typeName, weightLayout } from "../quant/types.ts";
import { roundF16 } from "../quant/float.ts";
import { convertActivations, dequantizeRow, vecDot, vecDotType } from "../quant/ops.ts";
import { expfGgml } from "./ggml_math.ts";
import { ropeAngles } from "../rope_angles.ts";
import { gegluGgml } from "../gelu.ts";

const fr = Math.fround;

class RefWeight implements Weight {
  /** Dequantized copy, made on first use by ops that need plain floats (norms, biases). */
  #floats?: Float32Array;
  constructor(
    readonly name: string,
    readonly type: GGMLType,
    readonly shape: readonly number[],
    readonly data: Uint8Array,
    readonly rowLen: number,
    readonly nRows: number,
    readonly rowStride: number,
  ) {}

  floats(): Float32Array {
    if (!this.#floats) {
      const f = new Float32Array(this.rowLen * this.nRows);
      for (let r = 0; r < this.nRows; r++) {
        dequantizeRow(this.type, this.data, r * this.rowStride, f, r * this.rowLen, this.rowLen);
      }
      this.#floats = f;
    }
    return this.#floats;
  }
}

class RefBuf implements Buf {
  readonly data: Float32Array;
  constructor(readonly length: number) {
    this.data = new Float32Array(length);
  }
}

class RefKV implements KVCache {
  readonly k: Float32Array[];
  readonly v: Float32Array[];
  constructor(
    readonly nLayers: number,
    readonly nCtx: number,
    readonly kvDim: number,
    readonly type: KVType,
  ) {
    this.k = Array.from({ length: nLayers }, () => new Float32Array(nCtx * kvDim));
    this.v = Array.from({ length: nLayers }, () => new Float32Array(nCtx * kvDim));
  }
}

function buf(b: Buf): RefBuf {
  if (!(b instanceof RefBuf)) throw new Error("buffer does not belong to the reference backend");
  return b;
}

function weight(w: Weight): RefWeight {
  if (!(w instanceof RefWeight)) {
    throw new Error(`weight ${w.name} does not belong to the reference backend`);
  }
  return w;
}

function kv(c: KVCache): RefKV {
  if (!(c instanceof RefKV)) throw new Error("KV cache does not belong to the reference backend");
  return c;
}

function need(b: RefBuf, end: number, what: string, start = 0): void {
  needElements(b.length, end, what, start);
}

/** Build the reference backend. Synchronous ops; `read` resolves immediately. */
export function createReferenceBackend(): Backend {
  return {
    name: "reference",
    device: "TypeScript, 1 thread (ggml CPU numerics)",

    upload(spec: WeightSpec): Weight {
      const { rowLen, nRows, stride, bytes } = weightLayout(spec.type, spec.shape);
      if (spec.data.length !== bytes) {
        throw new Error(
          `weight ${spec.name}: ${typeName(spec.type)} [${spec.shape.join(", ")}] needs ` +
            `${bytes} bytes, got ${spec.data.length}`,
        );
      }
      // The reference backend owns no memory of its own: it keeps the caller's bytes.
      return new RefWeight(spec.name, spec.type, [...spec.shape], spec.data, rowLen, nRows, stride);
    },

    weightRows(wt: Weight, first: number, count: number): Weight {
      const w = weight(wt);
      checkRowRange(w.name, w.nRows, first, count);
      const data = w.data.subarray(first * w.rowStride, (first + count) * w.rowStride);
      const name = `${w.name}[${first}:${first + count}]`;
      return new RefWeight(name, w.type, [w.rowLen, count], data, w.rowLen, count, w.rowStride);
    },

    beginUpload(spec: WeightShape): WeightWriter {
      const { rowLen, nRows, stride, bytes } = weightLayout(spec.type, spec.shape);
      let data: Uint8Array | undefined = new Uint8Array(bytes);
      const live = () => {
        if (!data) throw new Error(`weight ${spec.name}: upload already finished or aborted`);
        return data;
      };
      return {
        bytes,
        write(chunk: Uint8Array, offset: number): void {
          const d = live();
          checkChunk(spec.name, bytes, offset, chunk.length);
          d.set(chunk, offset);
        },
        finish(): Weight {
          const d = live();
          data = undefined;
          return new RefWeight(spec.name, spec.type, [...spec.shape], d, rowLen, nRows, stride);
        },
        abort(): void {
          data = undefined;
        },
      };
    },

    buffer(length: number): Buf {
      return new RefBuf(length);
    },

    write(dst: Buf, src: Float32Array, offset = 0): void {
      const d = buf(dst);
      need(d, offset + src.length, "write", offset);
      d.data.set(src, offset);
    },

    read(src: Buf, offset = 0, length?: number): Promise<Float32Array> {
      const s = buf(src);
      const n = length ?? s.length - offset;
      need(s, offset + n, "read", offset);
      return Promise.resolve(s.data.slice(offset, offset + n));
    },

    kvCache(nLayers: number, nCtx: number, kvDim: number, type: KVType): KVCache {
      return new RefKV(nLayers, nCtx, kvDim, type);
    },

    embed(table: Weight, ids: Int32Array, out: Buf): void {
      const w = weight(table);
      const o = buf(out);
      need(o, ids.length * w.rowLen, "embed");
      for (let t = 0; t < ids.length; t++) {
        const id = ids[t];
        if (id < 0 || id >= w.nRows) {
          throw new Error(`embed: token id ${id} outside ${w.name}'s ${w.nRows} rows`);
        }
        dequantizeRow(w.type, w.data, id * w.rowStride, o.data, t * w.rowLen, w.rowLen);
      }
    },

    rmsNorm(x: Buf, wt: Weight, out: Buf, rows: number, eps: number): void {
      // ggml_rms_norm: Σx² in double, mean and scale in float; then ggml_mul by the weight.
      const w = weight(wt);
      const n = w.rowLen;
      const g = w.floats();
      const xs = buf(x).data;
      const o = buf(out);
      need(buf(x), rows * n, "rmsNorm x");
      need(o, rows * n, "rmsNorm out");
      const epsF = fr(eps);
      for (let t = 0; t < rows; t++) {
        const base = t * n;
        let sum = 0;
        for (let i = 0; i < n; i++) sum += fr(xs[base + i] * xs[base + i]);
        const mean = fr(sum / n);
        const scale = fr(1 / fr(Math.sqrt(fr(mean + epsF))));
        for (let i = 0; i < n; i++) o.data[base + i] = fr(fr(xs[base + i] * scale) * g[i]);
      }
    },

    matmul(wt: Weight, x: Buf, out: Buf, rows: number): void {
      const w = weight(wt);
      const k = w.rowLen;
      const nOut = w.nRows;
      const xb = buf(x);
      const o = buf(out);
      need(xb, rows * k, "matmul x");
      need(o, rows * nOut, "matmul out");
      const vdt = vecDotType(w.type);
      // Convert every activation row first (ggml does the same), so out may alias x.
      const xq = [];
      for (let t = 0; t < rows; t++) {
        const row = convertActivations(vdt, xb.data, k, t * k);
        xq.push(row instanceof Float32Array ? row.slice() : row);
      }
      for (let t = 0; t < rows; t++) {
        for (let r = 0; r < nOut; r++) {
          o.data[t * nOut + r] = vecDot(w.type, w.data, r * w.rowStride, xq[t], k);
        }
      }
    },

    addBias(x: Buf, bias: Weight, rows: number): void {
      const b = weight(bias);
      const n = b.rowLen;
      const v = b.floats();
      const xs = buf(x);
      need(xs, rows * n, "addBias");
      for (let t = 0; t < rows; t++) {
        for (let i = 0; i < n; i++) xs.data[t * n + i] = fr(xs.data[t * n + i] + v[i]);
      }
    },

    rope(x: Buf, positions: Int32Array, p: RopeParams): void {
      // ggml_rope_ext, ext_factor 0: theta starts at the position and is multiplied by
      // theta_scale = base^(-2/n_dims) in float for each pair, then scaled by freq_scale; the
      // table's cos and sin carry attn_factor.
      const xs = buf(x);
      const { nHeads, headDim, ropeDim } = p;
      if (ropeDim > headDim || ropeDim % 2 !== 0) {
        throw new Error(`rope: ropeDim ${ropeDim} must be even and ≤ headDim ${headDim}`);
      }
      need(xs, positions.length * nHeads * headDim, "rope");
      const half = ropeDim / 2;
      const cs = ropeAngles(positions, p);
      for (let t = 0; t < positions.length; t++) {
        for (let h = 0; h < nHeads; h++) {
          const base = (t * nHeads + h) * headDim;
          for (let i = 0; i < half; i++) {
            const a = p.neox ? base + i : base + 2 * i;
            const b = p.neox ? base + i + half : base + 2 * i + 1;
            const x0 = xs.data[a];
            const x1 = xs.data[b];
            const cos = cs[(t * half + i) * 2];
            const sin = cs[(t * half + i) * 2 + 1];
            xs.data[a] = fr(fr(x0 * cos) - fr(x1 * sin));
            xs.data[b] = fr(fr(x0 * sin) + fr(x1 * cos));
          }
        }
      }
    },

    storeKV(
      cache: KVCache,
      layer: number,
      k: Buf,
      v: Buf,
      pos0: number,
      rows: number,
      rowOffset = 0,
    ): void {
      const c = kv(cache);
      const d = c.kvDim;
      const kb = buf(k);
      const vb = buf(v);
      checkStoreKV(c, layer, pos0, rows, rowOffset, kb.length, vb.length);
      const kd = c.k[layer];
      const vd = c.v[layer];
      for (let r = 0; r < rows; r++) {
        const src = (rowOffset + r) * d;
        const dst = (pos0 + r) * d;
        for (let i = 0; i < d; i++) {
          const kv0 = kb.data[src + i];
          const vv0 = vb.data[src + i];
          kd[dst + i] = c.type === "f16" ? roundF16(kv0) : kv0;
          vd[dst + i] = c.type === "f16" ? roundF16(vv0) : vv0;
        }
      }
    },

    attention(
      q: Buf,
      cache: KVCache,
      layer: number,
      out: Buf,
      pos0: number,
      rows: number,
      p: AttentionParams,
      rowOffset = 0,
    ): void {
      const c = kv(cache);
      const { nHeads, nKVHeads, headDim } = p;
      checkHeads(p, c);
      checkKVRange("attention", c, layer, pos0, rows);
      const qb = buf(q);
      const ob = buf(out);
      const rowLen = nHeads * headDim;
      need(qb, (rowOffset + rows) * rowLen, "attention q", rowOffset * rowLen);
      need(ob, (rowOffset + rows) * rowLen, "attention out", rowOffset * rowLen);
      const f16 = c.type === "f16";
      const kd = c.k[layer];
      const vd = c.v[layer];
      const group = nHeads / nKVHeads;
      const scale = fr(p.scale);
      const qh = new Float32Array(headDim);
      const probs = new Float32Array(pos0 + rows);
      const window = p.window ?? 0;
      for (let t = 0; t < rows; t++) {
        const nKV = pos0 + t + 1;
        // Sliding window: llama.cpp masks cell j when pos − j ≥ window (probability exactly 0);
        // the masked cells keep their lanes, so the sums below group as ggml's do.
        const lo = window > 0 ? Math.max(0, nKV - window) : 0;
        for (let h = 0; h < nHeads; h++) {
          const g = Math.floor(h / group);
          const qo = (rowOffset + t) * rowLen + h * headDim;
          // ggml converts q to the K cache's vec_dot type (f16 for an f16 cache).
          for (let i = 0; i < headDim; i++) {
            qh[i] = f16 ? roundF16(qb.data[qo + i]) : qb.data[qo + i];
          }
          let max = -Infinity;
          for (let j = 0; j < lo; j++) probs[j] = -Infinity;
          for (let j = lo; j < nKV; j++) {
            const ko = j * c.kvDim + g * headDim;
            let dot = 0;
            for (let i = 0; i < headDim; i++) dot += fr(qh[i] * kd[ko + i]);
            const s = fr(fr(dot) * scale);
            probs[j] = s;
            if (s > max) max = s;
          }
          // ggml_vec_soft_max_f32, x86 SSE2 path: exp via ggml_v_expf, 4 lanes at a time summed
          // as (e0 + e1) + (e2 + e3) in float, group sums added in double. llama.cpp pads the
          // row to a multiple of 32 with masked (zero) entries, so no lane takes the libm tail.
          let sum = 0;
          for (let j = 0; j < nKV; j += 4) {
            const e = [0, 0, 0, 0];
            for (let l = 0; l < 4 && j + l < nKV; l++) {
              e[l] = j + l < lo ? 0 : expfGgml(fr(probs[j + l] - max));
              probs[j + l] = e[l];
            }
            sum += fr(fr(e[0] + e[1]) + fr(e[2] + e[3]));
          }
          const inv = fr(1 / sum);
          for (let j = 0; j < nKV; j++) {
            const pj = fr(probs[j] * inv);
            probs[j] = f16 ? roundF16(pj) : pj;
          }
          for (let i = 0; i < headDim; i++) {
            let acc = 0;
            // masked cells add exact zeros, so the sum may start at lo
            for (let j = lo; j < nKV; j++) acc += fr(probs[j] * vd[j * c.kvDim + g * headDim + i]);
            ob.data[qo + i] = acc;
          }
        }
      }
    },

    swiglu(gate: Buf, up: Buf, out: Buf, n: number): void {
      const g = buf(gate);
      const u = buf(up);
      const o = buf(out);
      need(g, n, "swiglu gate");
      need(u, n, "swiglu up");
      need(o, n, "swiglu out");
      for (let i = 0; i < n; i++) {
        const x = g.data[i];
        // ggml_vec_swiglu_f32, x86 SSE2 path (ggml_v_silu); exact for rows whose length is a
        // multiple of 4, where ggml never falls back to libm expf.
        const silu = fr(x / fr(1 + expfGgml(-x)));
        o.data[i] = fr(silu * u.data[i]);
      }
    },

    add(a: Buf, b: Buf, n: number): void {
      const x = buf(a);
      const y = buf(b);
      need(x, n, "add a");
      need(y, n, "add b");
      for (let i = 0; i < n; i++) x.data[i] = fr(x.data[i] + y.data[i]);
    },

    scale(x: Buf, s: number, n: number): void {
      const xs = buf(x);
      need(xs, n, "scale");
      const f = fr(s);
      for (let i = 0; i < n; i++) xs.data[i] = fr(xs.data[i] * f);
    },

    geglu(gate: Buf, up: Buf, out: Buf, n: number): void {
      const g = buf(gate);
      const u = buf(up);
      const o = buf(out);
      need(g, n, "geglu gate");
      need(u, n, "geglu up");
      need(o, n, "geglu out");
      for (let i = 0; i < n; i++) o.data[i] = gegluGgml(g.data[i], u.data[i]);
    },

    copyRows(
      src: Buf,
      srcRows: Int32Array,
      dst: Buf,
      dstRows: Int32Array,
      cols: number,
      scales?: Float32Array,
    ): void {
      const s = buf(src);
      const d = buf(dst);
      checkCopyRows(s, srcRows, d, dstRows, cols, scales);
      for (let i = 0; i < srcRows.length; i++) {
        const from = srcRows[i] * cols;
        const to = dstRows[i] * cols;
        const f = scales ? fr(scales[i]) : 1;
        for (let j = 0; j < cols; j++) {
          d.data[to + j] = scales ? fr(s.data[from + j] * f) : s.data[from + j];
        }
      }
    },

    sumRowGroups(src: Buf, dst: Buf, groups: number, k: number, cols: number): void {
      const s = buf(src);
      const d = buf(dst);
      checkCounts("sumRowGroups", { groups, k, cols });
      need(s, groups * k * cols, "sumRowGroups src");
      need(d, groups * cols, "sumRowGroups dst");
      for (let g = 0; g < groups; g++) {
        for (let j = 0; j < cols; j++) {
          let acc = s.data[g * k * cols + j];
          for (let r = 1; r < k; r++) acc = fr(acc + s.data[(g * k + r) * cols + j]);
          d.data[g * cols + j] = acc;
        }
      }
    },

    free(_handle: Buf | KVCache | Weight): void {
      // Everything is garbage-collected host memory; nothing to release early.
    },

    dispose(): void {},
  };
}
