/**
 * The llama-family transformer (llama, qwen2), written once against `Backend`.
 *
 * A `LlamaStage` holds a contiguous layer range [from, to) of a model: the head (from = 0) also
 * embeds tokens, the tail (to = nLayers) also applies the output norm and the logits matmul.
 * A whole model on one machine is simply the stage [0, nLayers). Read `forwardChunk` top to
 * bottom: it is the paper's block, with the kernels behind Backend calls.
 */
import type {
  AttentionParams,
  Backend,
  Buf,
  KVCache,
  KVType,
  RopeParams,
  Weight,
} from "../kernels/backend.ts";
import { typeInfo, typeName } from "../kernels/quant/types.ts";
import type { GGUFTensorInfo } from "./gguf/types.ts";
import { type LlamaConfig, type MetadataView, ModelConfigError, readConfig } from "./config.ts";

/** What a stage needs from a GGUF file: metadata, the tensor index and lazy tensor bytes. */
export interface TensorSource {
  readonly metadata: MetadataView;
  tensor(name: string): GGUFTensorInfo | undefined;
  readTensor(info: GGUFTensorInfo): Promise<Uint8Array>;
}

/** Which layers a stage runs, and how big its batches and contexts are. */
export interface StageOptions {
  /** First layer (inclusive); default 0. */
  from?: number;
  /** Last layer (exclusive); default nLayers. */
  to?: number;
  /** Most tokens processed in one pass; longer prompts are processed in chunks. Default 512. */
  maxBatch?: number;
  /** Called after each tensor is uploaded, for progress reporting. */
  onTensor?: (name: string, bytes: number) => void;
}

/** Per-sequence state: the stage's KV cache and the next position. */
export interface Session {
  readonly kv: KVCache;
  readonly nCtx: number;
  /** Number of positions already in the cache. */
  pos: number;
}

/** Input of one forward pass: token ids at the head, hidden states `[n × nEmbd]` elsewhere. */
export type StageInput = { tokens: Int32Array } | { hidden: Float32Array; nTokens: number };

/** Output: the last row's logits at the tail, hidden states `[n × nEmbd]` elsewhere. */
export type StageOutput = { logits: Float32Array } | { hidden: Float32Array };

interface LayerWeights {
  attnNorm: Weight;
  wq: Weight;
  wk: Weight;
  wv: Weight;
  bq?: Weight;
  bk?: Weight;
  bv?: Weight;
  wo: Weight;
  ffnNorm: Weight;
  gate: Weight;
  up: Weight;
  down: Weight;
}

/** Activation buffers for `maxBatch` rows, allocated once per stage (no per-token allocation). */
interface Workspace {
  x: Buf; // residual stream [B × E]
  xb: Buf; // normed input of a sub-block [B × E]
  q: Buf; // [B × H·D]
  k: Buf; // [B × KV]
  v: Buf; // [B × KV]
  att: Buf; // attention output [B × H·D]
  proj: Buf; // sub-block output before the residual add [B × E]
  gate: Buf; // [B × F]
  up: Buf; // [B × F]
  act: Buf; // silu(gate) ⊙ up [B × F]
  last: Buf; // last row of x, for the logits [1 × E]
  lastNorm: Buf; // [1 × E]
  logits: Buf; // [1 × V]
  positions: Int32Array;
}

/** Thrown for inputs a stage cannot run (bad token ids, full context, wrong shapes). */
export class StageInputError extends Error {
  override name = "StageInputError";
  /** The request was wrong, not the stage: INVALID_ARGUMENT over RPC. */
  readonly rpcCode = "invalid_argument";
}

/** A contiguous range of a model's layers loaded on one backend. */
export class LlamaStage {
  private constructor(
    readonly config: LlamaConfig,
    readonly from: number,
    readonly to: number,
    readonly backend: Backend,
    private readonly tokenEmbd: Weight | undefined,
    private readonly layers: LayerWeights[],
    private readonly outputNorm: Weight | undefined,
    private readonly output: Weight | undefined,
    private readonly ws: Workspace,
    readonly maxBatch: number,
    /** Bytes of weights this stage uploaded. */
    readonly weightBytes: number,
  ) {}

  /** True when this stage embeds tokens (holds layer 0). */
  get isHead(): boolean {
    return this.from === 0;
  }

  /** True when this stage produces logits (holds the last layer). */
  get isTail(): boolean {
    return this.to === this.config.nLayers;
  }

  /** Load layers [from, to) of a GGUF model onto `backend`, reading only those tensors' bytes. */
  static async load(
    src: TensorSource,
    backend: Backend,
    opts: StageOptions = {},
  ): Promise<LlamaStage> {
    const embdInfo = src.tensor("token_embd.weight");
    if (!embdInfo) throw new ModelConfigError("model has no tensor token_embd.weight");
    const config = readConfig(src.metadata, embdInfo.dims[1] ?? 0);
    const from = opts.from ?? 0;
    const to = opts.to ?? config.nLayers;
    if (
      !(Number.isInteger(from) && Number.isInteger(to) && 0 <= from && from < to &&
        to <= config.nLayers)
    ) {
      throw new ModelConfigError(
        `layer range [${from}, ${to}) is not within the model's ${config.nLayers} layers`,
      );
    }
    const maxBatch = opts.maxBatch ?? 512;
    const { nEmbd: E, nFF: F, nHeads: H, nKVHeads, headDim: D, nVocab: V } = config;
    const KV = nKVHeads * D;
    let weightBytes = 0;

    const load = async (name: string, shape: number[], optional = false) => {
      const info = src.tensor(name);
      if (!info) {
        if (optional) return undefined;
        throw new ModelConfigError(`model has no tensor ${name}`);
      }
      const ti = typeInfo(info.type);
      if (!ti || !ti.weight || info.nBytes === undefined) {
        throw new ModelConfigError(
          `unsupported tensor type ${typeName(info.type)} in tensor ${name}`,
        );
      }
      const dims = info.dims.length === 2 && info.dims[1] === 1 && shape.length === 1
        ? [info.dims[0]]
        : [...info.dims];
      if (dims.length !== shape.length || dims.some((d, i) => d !== shape[i])) {
        throw new ModelConfigError(
          `tensor ${name} has shape [${info.dims.join(", ")}], expected [${shape.join(", ")}]`,
        );
      }
      const data = await src.readTensor(info);
      weightBytes += data.byteLength;
      const w = backend.upload({ name, type: info.type, shape, data });
      opts.onTensor?.(name, data.byteLength);
      return w;
    };

    const isHead = from === 0;
    const isTail = to === config.nLayers;
    const hasOutput = src.tensor("output.weight") !== undefined;
    const tokenEmbd = isHead || (isTail && !hasOutput)
      ? await load("token_embd.weight", [E, V])
      : undefined;
    const layers: LayerWeights[] = [];
    for (let l = from; l < to; l++) {
      const p = `blk.${l}.`;
      layers.push({
        attnNorm: (await load(p + "attn_norm.weight", [E]))!,
        wq: (await load(p + "attn_q.weight", [E, H * D]))!,
        wk: (await load(p + "attn_k.weight", [E, KV]))!,
        wv: (await load(p + "attn_v.weight", [E, KV]))!,
        bq: await load(p + "attn_q.bias", [H * D], true),
        bk: await load(p + "attn_k.bias", [KV], true),
        bv: await load(p + "attn_v.bias", [KV], true),
        wo: (await load(p + "attn_output.weight", [H * D, E]))!,
        ffnNorm: (await load(p + "ffn_norm.weight", [E]))!,
        gate: (await load(p + "ffn_gate.weight", [E, F]))!,
        up: (await load(p + "ffn_up.weight", [E, F]))!,
        down: (await load(p + "ffn_down.weight", [F, E]))!,
      });
    }
    const outputNorm = isTail ? await load("output_norm.weight", [E]) : undefined;
    const output = isTail
      ? (hasOutput ? await load("output.weight", [E, V]) : tokenEmbd)
      : undefined;

    const B = maxBatch;
    const ws: Workspace = {
      x: backend.buffer(B * E),
      xb: backend.buffer(B * E),
      q: backend.buffer(B * H * D),
      k: backend.buffer(B * KV),
      v: backend.buffer(B * KV),
      att: backend.buffer(B * H * D),
      proj: backend.buffer(B * E),
      gate: backend.buffer(B * F),
      up: backend.buffer(B * F),
      act: backend.buffer(B * F),
      last: backend.buffer(E),
      lastNorm: backend.buffer(E),
      logits: backend.buffer(isTail ? V : 1),
      positions: new Int32Array(B),
    };
    return new LlamaStage(
      config,
      from,
      to,
      backend,
      tokenEmbd,
      layers,
      outputNorm,
      output,
      ws,
      B,
      weightBytes,
    );
  }

  /** Start a sequence: a KV cache for this stage's layers holding up to `nCtx` positions. */
  newSession(nCtx = Math.min(this.config.contextLength, 4096), kvType: KVType = "f32"): Session {
    const kvDim = this.config.nKVHeads * this.config.headDim;
    return { kv: this.backend.kvCache(this.to - this.from, nCtx, kvDim, kvType), nCtx, pos: 0 };
  }

  /** Release a session's KV cache. */
  endSession(session: Session): void {
    this.backend.free(session.kv);
  }

  /** Bytes one session's KV cache takes on this stage. */
  kvBytes(nCtx: number, kvType: KVType = "f32"): number {
    const kvDim = this.config.nKVHeads * this.config.headDim;
    return 2 * (this.to - this.from) * nCtx * kvDim * (kvType === "f32" ? 4 : 2);
  }

  /**
   * Run `input` through this stage's layers, appending to the session's KV cache.
   * Returns the last row's logits at the tail, or all rows' hidden states otherwise.
   */
  async forward(session: Session, input: StageInput): Promise<StageOutput> {
    const { nEmbd: E, nVocab: V } = this.config;
    const n = "tokens" in input ? input.tokens.length : input.nTokens;
    if (n <= 0) throw new StageInputError("forward needs at least one token");
    if ("tokens" in input) {
      if (!this.isHead) {
        throw new StageInputError(
          `stage [${this.from}, ${this.to}) takes hidden states, not tokens`,
        );
      }
      for (const id of input.tokens) {
        if (!Number.isInteger(id) || id < 0 || id >= V) {
          throw new StageInputError(`token id ${id} is outside the vocabulary (0..${V - 1})`);
        }
      }
    } else {
      if (this.isHead) {
        throw new StageInputError(`stage [0, ${this.to}) takes tokens, not hidden states`);
      }
      if (input.hidden.length !== n * E) {
        throw new StageInputError(
          `hidden states hold ${input.hidden.length} values, expected ${n} × ${E}`,
        );
      }
    }
    if (session.pos + n > session.nCtx) {
      throw new StageInputError(
        `context is full: ${session.pos} + ${n} tokens exceed the session's ${session.nCtx} positions`,
      );
    }
    const hiddenOut = this.isTail ? undefined : new Float32Array(n * E);
    for (let start = 0; start < n; start += this.maxBatch) {
      const rows = Math.min(this.maxBatch, n - start);
      if ("tokens" in input) {
        this.backend.embed(this.tokenEmbd!, input.tokens.subarray(start, start + rows), this.ws.x);
      } else {
        this.backend.write(this.ws.x, input.hidden.subarray(start * E, (start + rows) * E));
      }
      this.forwardChunk(session, rows);
      if (hiddenOut) hiddenOut.set(await this.backend.read(this.ws.x, 0, rows * E), start * E);
      else if (start + rows === n) return { logits: await this.logits(rows) };
    }
    return { hidden: hiddenOut! };
  }

  /** The transformer blocks over `rows` rows already in ws.x, at the session's next positions. */
  private forwardChunk(session: Session, rows: number): void {
    const be = this.backend;
    const ws = this.ws;
    const c = this.config;
    const E = c.nEmbd;
    const pos0 = session.pos;
    const positions = ws.positions.subarray(0, rows);
    for (let t = 0; t < rows; t++) positions[t] = pos0 + t;
    const ropeQ: RopeParams = {
      nHeads: c.nHeads,
      headDim: c.headDim,
      ropeDim: c.ropeDim,
      freqBase: c.ropeFreqBase,
      freqScale: c.ropeFreqScale,
      neox: c.ropeNeox,
    };
    const ropeK: RopeParams = { ...ropeQ, nHeads: c.nKVHeads };
    const attn: AttentionParams = {
      nHeads: c.nHeads,
      nKVHeads: c.nKVHeads,
      headDim: c.headDim,
      scale: 1 / Math.sqrt(c.headDim),
    };
    for (let l = 0; l < this.layers.length; l++) {
      const w = this.layers[l];
      // attention
      be.rmsNorm(ws.x, w.attnNorm, ws.xb, rows, c.rmsEps);
      be.matmul(w.wq, ws.xb, ws.q, rows);
      be.matmul(w.wk, ws.xb, ws.k, rows);
      be.matmul(w.wv, ws.xb, ws.v, rows);
      if (w.bq) be.addBias(ws.q, w.bq, rows);
      if (w.bk) be.addBias(ws.k, w.bk, rows);
      if (w.bv) be.addBias(ws.v, w.bv, rows);
      be.rope(ws.q, positions, ropeQ);
      be.rope(ws.k, positions, ropeK);
      be.storeKV(session.kv, l, ws.k, ws.v, pos0, rows);
      be.attention(ws.q, session.kv, l, ws.att, pos0, rows, attn);
      be.matmul(w.wo, ws.att, ws.proj, rows);
      be.add(ws.x, ws.proj, rows * E);
      // feed-forward (SwiGLU)
      be.rmsNorm(ws.x, w.ffnNorm, ws.xb, rows, c.rmsEps);
      be.matmul(w.gate, ws.xb, ws.gate, rows);
      be.matmul(w.up, ws.xb, ws.up, rows);
      be.swiglu(ws.gate, ws.up, ws.act, rows * c.nFF);
      be.matmul(w.down, ws.act, ws.proj, rows);
      be.add(ws.x, ws.proj, rows * E);
    }
    session.pos += rows;
  }

  /** Output norm and logits of the last of `rows` rows in ws.x. */
  private async logits(rows: number): Promise<Float32Array> {
    const be = this.backend;
    const ws = this.ws;
    const E = this.config.nEmbd;
    let last = ws.x;
    if (rows > 1) {
      // Only the last position's logits are needed; copying one row is far cheaper than a
      // [rows × vocab] logits matmul.
      be.write(ws.last, await be.read(ws.x, (rows - 1) * E, E));
      last = ws.last;
    }
    be.rmsNorm(last, this.outputNorm!, ws.lastNorm, 1, this.config.rmsEps);
    be.matmul(this.output!, ws.lastNorm, ws.logits, 1);
    return await be.read(ws.logits, 0, this.config.nVocab);
  }
}
