/**
 * The llama-family transformer (llama, qwen2), written once against `Backend`.
 *
 * A `LlamaStage` holds a contiguous layer range [from, to) of a model: the head (from = 0) also
 * embeds tokens, the tail (to = nLayers) also applies the output norm and the logits matmul.
 * A whole model on one machine is simply the stage [0, nLayers). Read `layersOver` top to
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
import { configFromFile, type LlamaConfig, type MetadataView, ModelConfigError } from "./config.ts";

/** What a stage needs from a GGUF file: metadata, the tensor index and lazy tensor bytes. */
export interface TensorSource {
  readonly metadata: MetadataView;
  tensor(name: string): GGUFTensorInfo | undefined;
  readTensor(info: GGUFTensorInfo): Promise<Uint8Array>;
  /** A tensor's bytes in pieces read into `scratch` (optional; see GGUFFile.readTensorChunks). */
  readTensorChunks?(
    info: GGUFTensorInfo,
    scratch: Uint8Array,
  ): AsyncIterable<{ offset: number; bytes: Uint8Array }>;
}

/** Bytes of the one buffer a stage load streams every tensor through. */
const LOAD_CHUNK = 4 << 20;

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
  last: Buf; // last rows of the batch's sequences, for the logits [L × E]
  lastNorm: Buf; // [L × E]
  logits: Buf; // [L × V], L = min(maxBatch, MAX_LOGIT_ROWS)
  positions: Int32Array;
}

/**
 * Most sequences whose logits one pass computes at once; bounds the logits buffer
 * (64 × a 150k vocabulary is 39 MB).
 */
const MAX_LOGIT_ROWS = 64;

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

  /** Sequences whose logits are computed in one group. */
  private get maxLogitRows(): number {
    return Math.min(this.maxBatch, MAX_LOGIT_ROWS);
  }

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
    const config = configFromFile(src);
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
    let scratch = new Uint8Array(0);

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
      let w: Weight;
      if (src.readTensorChunks) {
        // Streamed through one reused buffer: no whole-tensor copy outlives (or precedes) the
        // backend's own, so the loaded process holds the weights once.
        const writer = backend.beginUpload({ name, type: info.type, shape });
        try {
          if (writer.bytes !== info.nBytes) {
            throw new ModelConfigError(
              `tensor ${name} holds ${info.nBytes} bytes, its shape needs ${writer.bytes}`,
            );
          }
          const want = Math.min(LOAD_CHUNK, info.nBytes);
          if (scratch.length < want) scratch = new Uint8Array(want);
          for await (const { offset, bytes } of src.readTensorChunks(info, scratch)) {
            writer.write(bytes, offset);
          }
          w = writer.finish();
        } catch (e) {
          writer.abort();
          throw e;
        }
      } else {
        const data = await src.readTensor(info);
        w = backend.upload({ name, type: info.type, shape, data });
      }
      weightBytes += info.nBytes;
      opts.onTensor?.(name, info.nBytes);
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
      last: backend.buffer(Math.min(B, MAX_LOGIT_ROWS) * E),
      lastNorm: backend.buffer(Math.min(B, MAX_LOGIT_ROWS) * E),
      logits: backend.buffer(isTail ? Math.min(B, MAX_LOGIT_ROWS) * V : 1),
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

  /** Free this stage's weights and buffers on its backend (the stage is unusable afterwards). */
  dispose(): void {
    const be = this.backend;
    const weights = new Set<Weight>();
    for (const w of [this.tokenEmbd, this.outputNorm, this.output]) if (w) weights.add(w);
    for (const l of this.layers) {
      for (const w of Object.values(l)) if (w) weights.add(w as Weight);
    }
    for (const w of weights) be.free(w);
    const ws = this.ws;
    for (
      const b of [
        ws.x,
        ws.xb,
        ws.q,
        ws.k,
        ws.v,
        ws.att,
        ws.proj,
        ws.gate,
        ws.up,
        ws.act,
        ws.last,
        ws.lastNorm,
        ws.logits,
      ]
    ) {
      be.free(b);
    }
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
   * Inputs longer than `maxBatch` rows are processed in chunks.
   */
  async forward(session: Session, input: StageInput): Promise<StageOutput> {
    const n = this.validate(session, input);
    if (n <= this.maxBatch) return (await this.forwardBatch([{ session, input }]))[0];
    const E = this.config.nEmbd;
    let out: StageOutput | undefined;
    const hidden = this.isTail ? undefined : new Float32Array(n * E);
    for (let start = 0; start < n; start += this.maxBatch) {
      const end = Math.min(n, start + this.maxBatch);
      const part: StageInput = "tokens" in input
        ? { tokens: input.tokens.subarray(start, end) }
        : { hidden: input.hidden.subarray(start * E, end * E), nTokens: end - start };
      out = (await this.forwardBatch([{ session, input: part }]))[0];
      if (hidden && "hidden" in out) hidden.set(out.hidden, start * E);
    }
    return hidden ? { hidden } : out!;
  }

  /**
   * One forward pass over several sessions at once (continuous batching): their rows are
   * concatenated so every matmul runs once per layer for all of them, while RoPE positions,
   * the KV cache and attention stay per session. Each row's result is the same as when its
   * session runs alone. Total rows must not exceed `maxBatch`.
   */
  async forwardBatch(items: { session: Session; input: StageInput }[]): Promise<StageOutput[]> {
    if (items.length === 0) return [];
    const be = this.backend;
    const ws = this.ws;
    const E = this.config.nEmbd;
    const rowsOf = items.map((it) => this.validate(it.session, it.input));
    const total = rowsOf.reduce((a, b) => a + b, 0);
    if (total > this.maxBatch) {
      throw new StageInputError(`a batch of ${total} rows exceeds this stage's ${this.maxBatch}`);
    }
    if (new Set(items.map((it) => it.session)).size !== items.length) {
      throw new StageInputError("a session may appear only once in a batch");
    }
    // Input rows → ws.x, positions of every row.
    const offsets: number[] = [];
    let at = 0;
    if (this.isHead) {
      const ids = new Int32Array(total);
      for (const [i, it] of items.entries()) {
        offsets.push(at);
        ids.set((it.input as { tokens: Int32Array }).tokens, at);
        at += rowsOf[i];
      }
      be.embed(this.tokenEmbd!, ids, ws.x);
    } else {
      for (const [i, it] of items.entries()) {
        offsets.push(at);
        be.write(ws.x, (it.input as { hidden: Float32Array }).hidden, at * E);
        at += rowsOf[i];
      }
    }
    for (const [i, it] of items.entries()) {
      for (let t = 0; t < rowsOf[i]; t++) ws.positions[offsets[i] + t] = it.session.pos + t;
    }
    this.layersOver(
      items.map((it, i) => ({ session: it.session, offset: offsets[i], rows: rowsOf[i] })),
      total,
    );
    for (const [i, it] of items.entries()) it.session.pos += rowsOf[i];
    if (!this.isTail) {
      const all = await be.read(ws.x, 0, total * E);
      return items.map((_, i) => ({
        hidden: all.slice(offsets[i] * E, (offsets[i] + rowsOf[i]) * E),
      }));
    }
    return await this.logitsOf(offsets.map((o, i) => o + rowsOf[i] - 1), total);
  }

  /** Check one input against its session; returns its row count. */
  private validate(session: Session, input: StageInput): number {
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
    return n;
  }

  /**
   * The transformer blocks over the `total` rows in ws.x: every matmul once over all rows,
   * KV cache and attention per sequence (`seqs` gives each one's rows).
   */
  private layersOver(
    seqs: { session: Session; offset: number; rows: number }[],
    total: number,
  ): void {
    const be = this.backend;
    const ws = this.ws;
    const c = this.config;
    const E = c.nEmbd;
    const positions = ws.positions.subarray(0, total);
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
      be.rmsNorm(ws.x, w.attnNorm, ws.xb, total, c.rmsEps);
      be.matmul(w.wq, ws.xb, ws.q, total);
      be.matmul(w.wk, ws.xb, ws.k, total);
      be.matmul(w.wv, ws.xb, ws.v, total);
      if (w.bq) be.addBias(ws.q, w.bq, total);
      if (w.bk) be.addBias(ws.k, w.bk, total);
      if (w.bv) be.addBias(ws.v, w.bv, total);
      be.rope(ws.q, positions, ropeQ);
      be.rope(ws.k, positions, ropeK);
      for (const s of seqs) {
        be.storeKV(s.session.kv, l, ws.k, ws.v, s.session.pos, s.rows, s.offset);
        be.attention(ws.q, s.session.kv, l, ws.att, s.session.pos, s.rows, attn, s.offset);
      }
      be.matmul(w.wo, ws.att, ws.proj, total);
      be.add(ws.x, ws.proj, total * E);
      // feed-forward (SwiGLU)
      be.rmsNorm(ws.x, w.ffnNorm, ws.xb, total, c.rmsEps);
      be.matmul(w.gate, ws.xb, ws.gate, total);
      be.matmul(w.up, ws.xb, ws.up, total);
      be.swiglu(ws.gate, ws.up, ws.act, total * c.nFF);
      be.matmul(w.down, ws.act, ws.proj, total);
      be.add(ws.x, ws.proj, total * E);
    }
  }

  /** Output norm and logits of the given rows of ws.x (one per sequence). */
  private async logitsOf(rows: number[], total: number): Promise<StageOutput[]> {
    const be = this.backend;
    const ws = this.ws;
    const { nEmbd: E, nVocab: V } = this.config;
    const out: StageOutput[] = [];
    for (let g = 0; g < rows.length; g += this.maxLogitRows) {
      const group = rows.slice(g, g + this.maxLogitRows);
      let src = ws.x;
      // When every row of the batch is wanted in order (pure decode), use ws.x as it is;
      // otherwise gather the last rows: far cheaper than logits for every prompt row.
      const direct = g === 0 && group.length === total && group.every((r, i) => r === i);
      if (!direct) {
        const all = await be.read(ws.x, 0, total * E);
        const gathered = new Float32Array(group.length * E);
        group.forEach((r, i) => gathered.set(all.subarray(r * E, (r + 1) * E), i * E));
        be.write(ws.last, gathered);
        src = ws.last;
      }
      be.rmsNorm(src, this.outputNorm!, ws.lastNorm, group.length, this.config.rmsEps);
      be.matmul(this.output!, ws.lastNorm, ws.logits, group.length);
      const logits = await be.read(ws.logits, 0, group.length * V);
      for (let i = 0; i < group.length; i++) out.push({ logits: logits.slice(i * V, (i + 1) * V) });
    }
    return out;
  }
}
