/**
 * The llama-family transformer (llama, qwen2, qwen3, qwen3moe, gemma3, phi3), written once
 * against `Backend`.
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
  TopCandidates,
  Weight,
} from "../kernels/backend.ts";
import { candidatesAt, candidateWords } from "../kernels/backend.ts";
import { typeInfo, typeName } from "../kernels/quant/types.ts";
import type { GGUFTensorInfo } from "./gguf/types.ts";
import {
  configFromFile,
  isSlidingLayer,
  kvCacheBytes,
  type LlamaConfig,
  type MetadataView,
  ModelConfigError,
} from "./config.ts";
import { routeTokens } from "./moe.ts";
import { type CapturePlan, PrefixCache } from "./prefix_cache.ts";
import { type CandidateRequest, hostCandidates } from "./sampler.ts";
import {
  readRopeFactors,
  type RopeFactorSets,
  type SessionRopeFactors,
  sessionRopeFactors,
} from "./rope_factors.ts";

/** What a stage needs from a GGUF file: metadata, the tensor index and lazy tensor bytes. */
export interface TensorSource {
  readonly metadata: MetadataView;
  /** Every tensor the file holds. */
  readonly tensors: readonly GGUFTensorInfo[];
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
/**
 * A pass gives the event loop a turn between layers and between a layer's big matmuls once it
 * has held the thread this long. A CPU backend runs every op on the calling thread: one prefill
 * through 14 layers of an 8B model held it for seconds, so the agent answered no gossip probe
 * or RPC ping and its peers declared it dead mid-request (issue 17).
 */
export const YIELD_AFTER_MS = 50;

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

/** One session's rows in a batched pass; `ids` are their token ids where known (prefix cache). */
export interface BatchItem {
  session: Session;
  input: StageInput;
  ids?: ArrayLike<number>;
  /**
   * At the tail: nobody reads this item's logits (a prompt chunk that is not the prompt's
   * last), so its rows only fill the KV cache and it gets empty logits. Elsewhere: ignored.
   */
  noOutput?: boolean;
}

/** The logits of a tail item that asked for none (BatchItem.noOutput). */
const NO_LOGITS = new Float32Array(0);

/** Output: the last row's logits at the tail, hidden states `[n × nEmbd]` elsewhere. */
export type StageOutput = { logits: Float32Array } | { hidden: Float32Array };

/** One layer's weights; fused tensors (phi3) and 3-D expert tensors appear as row views. */
interface LayerWeights {
  attnNorm: Weight;
  wq: Weight;
  wk: Weight;
  wv: Weight;
  bq?: Weight;
  bk?: Weight;
  bv?: Weight;
  qNorm?: Weight;
  kNorm?: Weight;
  wo: Weight;
  attnPostNorm?: Weight;
  ffnNorm: Weight;
  ffn: DenseFFN | ExpertFFN;
  ffnPostNorm?: Weight;
}

/** A gated FFN: down(act(gate·x) ⊙ up·x). */
interface DenseFFN {
  gate: Weight;
  up: Weight;
  down: Weight;
}

/** A mixture of experts: the router and one DenseFFN per expert. */
interface ExpertFFN {
  router: Weight;
  experts: DenseFFN[];
}

/** Activation buffers for `maxBatch` rows, allocated once per stage (no per-token allocation). */
interface Workspace {
  x: Buf; // residual stream [B × E]
  xb: Buf; // normed input of a sub-block [B × E]
  q: Buf; // [B × H·D]
  qRaw: Buf; // q before its per-head norm [B × H·D]
  k: Buf; // [B × KV]
  kRaw: Buf; // k before its per-head norm [B × KV]
  v: Buf; // [B × KV]
  att: Buf; // attention output [B × H·D]
  proj: Buf; // sub-block output before the residual add [B × E]
  gate: Buf; // [B × F]
  up: Buf; // [B × F]
  act: Buf; // silu(gate) ⊙ up [B × F]
  router: Buf; // router logits [B × X]
  expIn: Buf; // one expert's input rows, gathered from xb [B × E]
  slots: Buf; // every token's weighted expert outputs, slot by slot [B × K × E]
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
    /** Every weight uploaded (views of them are not listed: freeing these frees the views). */
    private readonly owned: Weight[],
    /** RoPE frequency factors (`rope_freqs.weight`, LongRoPE's two sets), if any. */
    private readonly ropeFactors: RopeFactorSets,
  ) {}

  /** The prefix KV cache, once enablePrefixCache() made one. */
  private prefix?: PrefixCache;

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
    const owned: Weight[] = [];

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
      owned.push(w);
      opts.onTensor?.(name, info.nBytes);
      return w;
    };

    const ropeFactors = await readRopeFactors(src, config);
    const isHead = from === 0;
    const isTail = to === config.nLayers;
    const hasOutput = src.tensor("output.weight") !== undefined;
    const tokenEmbd = isHead || (isTail && !hasOutput)
      ? await load("token_embd.weight", [E, V])
      : undefined;
    const layers: LayerWeights[] = [];
    const rows = (w: Weight, first: number, count: number) => backend.weightRows(w, first, count);
    for (let l = from; l < to; l++) {
      const p = `blk.${l}.`;
      const attnNorm = (await load(p + "attn_norm.weight", [E]))!;
      let wq: Weight, wk: Weight, wv: Weight;
      if (config.arch === "phi3") {
        // One fused matrix: q rows, then k rows, then v rows; matmuls read row views of it.
        const qkv = (await load(p + "attn_qkv.weight", [E, H * D + 2 * KV]))!;
        [wq, wk, wv] = [rows(qkv, 0, H * D), rows(qkv, H * D, KV), rows(qkv, H * D + KV, KV)];
      } else {
        wq = (await load(p + "attn_q.weight", [E, H * D]))!;
        wk = (await load(p + "attn_k.weight", [E, KV]))!;
        wv = (await load(p + "attn_v.weight", [E, KV]))!;
      }
      const bq = await load(p + "attn_q.bias", [H * D], true);
      const bk = await load(p + "attn_k.bias", [KV], true);
      const bv = await load(p + "attn_v.bias", [KV], true);
      const qNorm = config.qkNorm ? await load(p + "attn_q_norm.weight", [D]) : undefined;
      const kNorm = config.qkNorm ? await load(p + "attn_k_norm.weight", [D]) : undefined;
      const wo = (await load(p + "attn_output.weight", [H * D, E]))!;
      const attnPostNorm = config.gemma
        ? await load(p + "post_attention_norm.weight", [E])
        : undefined;
      const ffnNorm = (await load(p + "ffn_norm.weight", [E]))!;
      let ffn: DenseFFN | ExpertFFN;
      if (config.nExperts > 0) {
        const { nExperts: X, nFFExpert: FE } = config;
        const router = (await load(p + "ffn_gate_inp.weight", [E, X]))!;
        // 3-D [in, out, X] tensors: expert e is rows [e·out, (e+1)·out) of the flattened matrix.
        const gate = (await load(p + "ffn_gate_exps.weight", [E, FE, X]))!;
        const up = (await load(p + "ffn_up_exps.weight", [E, FE, X]))!;
        const down = (await load(p + "ffn_down_exps.weight", [FE, E, X]))!;
        const experts = Array.from({ length: X }, (_, e) => ({
          gate: rows(gate, e * FE, FE),
          up: rows(up, e * FE, FE),
          down: rows(down, e * E, E),
        }));
        ffn = { router, experts };
      } else if (config.arch === "phi3") {
        // Fused gate|up: the first F rows are the gate, the next F the up projection.
        const gateUp = (await load(p + "ffn_up.weight", [E, 2 * F]))!;
        ffn = {
          gate: rows(gateUp, 0, F),
          up: rows(gateUp, F, F),
          down: (await load(p + "ffn_down.weight", [F, E]))!,
        };
      } else {
        ffn = {
          gate: (await load(p + "ffn_gate.weight", [E, F]))!,
          up: (await load(p + "ffn_up.weight", [E, F]))!,
          down: (await load(p + "ffn_down.weight", [F, E]))!,
        };
      }
      const ffnPostNorm = config.gemma ? await load(p + "post_ffw_norm.weight", [E]) : undefined;
      layers.push({
        attnNorm,
        wq,
        wk,
        wv,
        bq,
        bk,
        bv,
        qNorm,
        kNorm,
        wo,
        attnPostNorm,
        ffnNorm,
        ffn,
        ffnPostNorm,
      });
    }
    const outputNorm = isTail ? await load("output_norm.weight", [E]) : undefined;
    const output = isTail
      ? (hasOutput ? await load("output.weight", [E, V]) : tokenEmbd)
      : undefined;

    const B = maxBatch;
    // A MoE file's dense feed_forward_length sizes no tensor (every FFN is experts): 2^20 there
    // once made a 750 KB model allocate gigabytes.
    const FF = config.nExperts > 0 ? config.nFFExpert : F;
    const ws: Workspace = {
      x: backend.buffer(B * E),
      xb: backend.buffer(B * E),
      q: backend.buffer(B * H * D),
      qRaw: backend.buffer(config.qkNorm ? B * H * D : 1),
      k: backend.buffer(B * KV),
      kRaw: backend.buffer(config.qkNorm ? B * KV : 1),
      v: backend.buffer(B * KV),
      att: backend.buffer(B * H * D),
      proj: backend.buffer(B * E),
      gate: backend.buffer(B * FF),
      up: backend.buffer(B * FF),
      act: backend.buffer(B * FF),
      router: backend.buffer(config.nExperts > 0 ? B * config.nExperts : 1),
      expIn: backend.buffer(config.nExperts > 0 ? B * E : 1),
      slots: backend.buffer(config.nExperts > 0 ? B * config.nExpertsUsed * E : 1),
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
      owned,
      ropeFactors,
    );
  }

  /** Free this stage's weights and buffers on its backend (the stage is unusable afterwards). */
  dispose(): void {
    const be = this.backend;
    this.prefix?.clear();
    for (const w of this.owned) be.free(w);
    for (const b of Object.values(this.ws)) if (!(b instanceof Int32Array)) be.free(b);
    if (this.ring) be.free(this.ring);
    this.ring = null;
  }

  /** Start a sequence: a KV cache for this stage's layers holding up to `nCtx` positions. */
  newSession(nCtx = Math.min(this.config.contextLength, 4096), kvType: KVType = "f32"): Session {
    const kvDim = this.config.nKVHeads * this.config.headDim;
    return {
      kv: this.backend.kvCache(this.to - this.from, nCtx, kvDim, kvType, this.config.headDim),
      nCtx,
      pos: 0,
    };
  }

  /**
   * The RoPE factors a session rotates with, chosen by its context size as llama.cpp chooses by
   * its context's (LongRoPE's long set past the original context: model/rope_factors.ts). Every
   * stage of a chain opens a session with the same nCtx, so all of them pick the same set.
   */
  ropeFactorsOf(session: Session): SessionRopeFactors {
    return sessionRopeFactors(this.ropeFactors, this.config, session.nCtx);
  }

  /** Release a session's KV cache. */
  endSession(session: Session): void {
    this.prefix?.release(session);
    this.backend.free(session.kv);
  }

  /**
   * Keep the KV of served prefixes within `budgetBytes` (blocks of `blockTokens`), for sessions
   * that start with restorePrefix(). 0 turns it off. Returns the cache (its stats()).
   */
  enablePrefixCache(budgetBytes: number, blockTokens?: number): PrefixCache {
    this.prefix?.clear();
    const kvDim = this.config.nKVHeads * this.config.headDim;
    this.prefix = new PrefixCache(this.backend, {
      nLayers: this.to - this.from,
      kvDim,
      budgetBytes,
      blockTokens,
    });
    return this.prefix;
  }

  /** The prefix cache's counters (undefined when none is enabled). */
  get prefixCache(): PrefixCache | undefined {
    return this.prefix;
  }

  /**
   * Start a fresh session from the longest cached prefix of `ids` (the whole prompt): its KV is
   * copied in and session.pos set past it. Returns the positions restored (0 without a cache);
   * the caller runs the rest of `ids` through forward() with `ids` so that its blocks are
   * cached in turn. Always leaves at least one token to run.
   */
  restorePrefix(session: Session, ids: ArrayLike<number>): number {
    if (session.pos !== 0) {
      throw new StageInputError(`restorePrefix needs a fresh session (it is at ${session.pos})`);
    }
    if (!this.prefix) return 0;
    // KV rotated with one LongRoPE factor set is never restored into a session of the other.
    const n = this.prefix.restore(session, session.kv, ids, this.ropeFactorsOf(session).set);
    session.pos = n;
    return n;
  }

  /**
   * Keep the first `n` positions a session restored (restorePrefix) and drop the rest: they
   * run again from the next frame (the chain restored less elsewhere).
   */
  keepPrefix(session: Session, n: number): void {
    if (n > session.pos) {
      throw new StageInputError(`cannot keep ${n} positions of a session at ${session.pos}`);
    }
    session.pos = n;
    this.prefix?.truncate(session, n);
  }

  /** Bytes one session's KV cache takes on this stage. */
  kvBytes(nCtx: number, kvType: KVType = "f32"): number {
    return kvCacheBytes(this.config, this.to - this.from, nCtx, kvType);
  }

  /**
   * Run `input` through this stage's layers, appending to the session's KV cache.
   * Returns the last row's logits at the tail (empty with `noOutput`: BatchItem.noOutput), or all
   * rows' hidden states otherwise. Inputs longer than `maxBatch` rows are processed in chunks.
   */
  async forward(
    session: Session,
    input: StageInput,
    ids?: ArrayLike<number>,
    noOutput = false,
  ): Promise<StageOutput> {
    const n = this.validate(session, input);
    if (n <= this.maxBatch) {
      return (await this.forwardBatch([{ session, input, ids, noOutput }]))[0];
    }
    const E = this.config.nEmbd;
    let out: StageOutput | undefined;
    const hidden = this.isTail ? undefined : new Float32Array(n * E);
    for (let start = 0; start < n; start += this.maxBatch) {
      const end = Math.min(n, start + this.maxBatch);
      const part: StageInput = "tokens" in input
        ? { tokens: input.tokens.subarray(start, end) }
        : { hidden: input.hidden.subarray(start * E, end * E), nTokens: end - start };
      const partIds = ids && Array.prototype.slice.call(ids, start, end);
      // Only the last chunk's logits are the answer: the others skip the output matrix (for
      // an 8B model's 128k vocabulary, ~300 MB of weights read per chunk).
      const item = { session, input: part, ids: partIds, noOutput: noOutput || end < n };
      out = (await this.forwardBatch([item]))[0];
      if (hidden && "hidden" in out) hidden.set(out.hidden, start * E);
    }
    return hidden ? { hidden } : out!;
  }

  /**
   * One forward pass over several sessions at once (continuous batching): their rows are
   * concatenated so every matmul runs once per layer for all of them, while RoPE positions,
   * the KV cache and attention stay per session. Each row's result is the same as when its
   * session runs alone. Total rows must not exceed `maxBatch`. `ids` are the token ids of the
   * rows (the head knows them from its input): with a prefix cache they let its blocks be kept.
   */
  async forwardBatch(items: BatchItem[]): Promise<StageOutput[]> {
    // LongRoPE: sessions on either side of the original context rotate with different factor
    // sets, and a pass rotates all its rows with one; each set runs as a pass of its own (all
    // inputs checked first, so a bad one fails the batch before any session moves).
    const sets = items.map((it) => this.ropeFactorsOf(it.session).set);
    if (new Set(sets).size > 1) {
      for (const it of items) this.validate(it.session, it.input);
      const out = new Array<StageOutput>(items.length);
      for (const set of new Set(sets)) {
        const idx = items.flatMap((_, i) => sets[i] === set ? [i] : []);
        const got = await this.forwardBatch(idx.map((i) => items[i]));
        idx.forEach((i, j) => out[i] = got[j]);
      }
      return out;
    }
    return await this.pass(items, async (rows, total) => {
      const want = items.flatMap((it, i) => it.noOutput ? [] : [i]);
      if (want.length === items.length) return await this.logitsOf(rows, total);
      const got = want.length ? await this.logitsOf(want.map((i) => rows[i]), total) : [];
      return items.map((it, i) => it.noOutput ? { logits: NO_LOGITS } : got[want.indexOf(i)]);
    });
  }

  /**
   * forward() at the tail, but reading back only the sampling candidates `want` asks for (see
   * Sampler.candidateRequest) when the backend computes them (Backend.topCandidates): a few
   * hundred bytes per step instead of a vocabulary of floats. Otherwise, and for inputs longer
   * than maxBatch, it is forward().
   */
  async forwardCandidates(
    session: Session,
    input: StageInput,
    want: CandidateRequest,
    ids?: ArrayLike<number>,
  ): Promise<StageOutput | { candidates: TopCandidates }> {
    const be = this.backend;
    if (!this.isTail || !be.topCandidates || this.validate(session, input) > this.maxBatch) {
      return await this.forward(session, input, ids);
    }
    const [out] = await this.pass([{ session, input, ids }], async ([row], total) => {
      const { nVocab: V, rmsEps } = this.config;
      const src = this.rowsOf([row], total);
      be.rmsNorm(src, this.outputNorm!, this.ws.lastNorm, 1, rmsEps);
      be.matmul(this.output!, this.ws.lastNorm, this.ws.logits, 1);
      const [candidates] = await be.topCandidates!(
        this.ws.logits,
        1,
        V,
        want.k,
        [want.exclude],
        want.sum ?? true,
      );
      return [{ candidates }];
    });
    return out;
  }

  /**
   * `steps` greedy decode steps from token `first` (step j feeds step j−1's best candidate);
   * returns each step's `k` candidates. Where the backend keeps candidates on the device
   * (Backend.topCandidatesInto + embedAt) and this stage holds the whole model, the ids never
   * visit the host between steps: every step is recorded and started at once and read back once,
   * so a GPU pays its host round trip (at least 10 ms per awaited read in Deno 2.9.6) once per
   * run instead of once per token. Elsewhere (and with a prefix cache, whose blocks need the ids)
   * it is a loop of forwardCandidates; both give the same candidates.
   */
  async decodeGreedy(
    session: Session,
    first: number,
    steps: number,
    k = 1,
  ): Promise<TopCandidates[]> {
    const be = this.backend;
    if (!this.isTail) throw new StageInputError("greedy decoding needs the tail stage");
    if (!Number.isInteger(steps) || steps < 0) {
      throw new StageInputError(`decodeGreedy: ${steps} steps`);
    }
    if (steps === 0) return [];
    // The run feeds `steps` tokens, `first` among them: the id and the context are checked alike.
    this.validate(session, { tokens: new Int32Array(steps).fill(first) });
    if (!this.decodesOnDevice) {
      const out: TopCandidates[] = [];
      const want = { k, exclude: new Int32Array() };
      let id = first;
      for (let j = 0; j < steps; j++) {
        const r = await this.forwardCandidates(session, { tokens: Int32Array.of(id) }, want);
        const c = "candidates" in r
          ? r.candidates
          : hostCandidates((r as { logits: Float32Array }).logits, want)!;
        out.push(c);
        id = c.ids[0];
      }
      return out;
    }
    const run = this.passing.then(async () => {
      const { nVocab: V, nEmbd: E, rmsEps } = this.config;
      const ws = this.ws;
      const words = candidateWords(k);
      const ring = this.candidateRing(steps * words);
      for (let j = 0; j < steps; j++) {
        if (j === 0) be.embed(this.tokenEmbd!, Int32Array.of(first), ws.x);
        else be.embedAt!(this.tokenEmbd!, ring, (j - 1) * words, ws.x);
        if (this.config.gemma) be.scale(ws.x, Math.fround(Math.sqrt(E)), E);
        ws.positions[0] = session.pos;
        await this.layersOver([{ session, offset: 0, rows: 1 }], 1);
        session.pos++;
        be.rmsNorm(ws.x, this.outputNorm!, ws.lastNorm, 1, rmsEps);
        be.matmul(this.output!, ws.lastNorm, ws.logits, 1);
        be.topCandidatesInto!(ws.logits, V, k, ring, j * words);
        // Let the device start this step while the host records the next one.
        be.flush?.();
      }
      const all = await be.read(ring, 0, steps * words);
      return Array.from({ length: steps }, (_, j) => candidatesAt(all, j * words, k));
    });
    this.passing = run.then(() => {}, () => {});
    return await run;
  }

  /**
   * Whether decodeGreedy keeps the ids on the device: the whole model on a backend with device
   * candidates, and no prefix cache (its blocks need the ids on the host).
   */
  get decodesOnDevice(): boolean {
    const be = this.backend;
    return this.isHead && this.isTail && !!be.topCandidatesInto && !!be.embedAt && !this.prefix;
  }

  /** The device buffer greedy runs leave their candidates in, grown on demand. */
  private candidateRing(words: number): Buf {
    if (!this.ring || this.ringWords < words) {
      if (this.ring) this.backend.free(this.ring);
      this.ringWords = Math.max(words, 2 * this.ringWords);
      this.ring = this.backend.buffer(this.ringWords);
    }
    return this.ring;
  }
  private ring: Buf | null = null;
  private ringWords = 0;

  /** The batch pass of forwardBatch; `tail` turns the last row of each sequence into results. */
  private pass<T>(
    items: BatchItem[],
    tail: (rows: number[], total: number) => Promise<T[]>,
  ): Promise<(T | { hidden: Float32Array })[]> {
    // One pass at a time: passes share the workspace buffers, and a pass awaits between layers
    // (it gives the event loop a turn), so a second caller must wait for the first to end.
    const run = this.passing.then(() => this.passNow(items, tail));
    this.passing = run.then(() => {}, () => {});
    return run;
  }

  /** The end of the last pass started (passes run one after another). */
  private passing: Promise<void> = Promise.resolve();

  private async passNow<T>(
    items: BatchItem[],
    tail: (rows: number[], total: number) => Promise<T[]>,
  ): Promise<(T | { hidden: Float32Array })[]> {
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
      // gemma3 scales the embeddings inside the graph (ggml_scale by sqrtf(n_embd)).
      if (this.config.gemma) be.scale(ws.x, Math.fround(Math.sqrt(E)), total * E);
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
    const plans: CapturePlan[] = [];
    for (const [i, it] of items.entries()) {
      const ids = it.ids ?? ("tokens" in it.input ? it.input.tokens : undefined);
      const plan = this.prefix?.plan(it.session, it.session.pos, ids, offsets[i]);
      if (plan) plans.push(plan);
    }
    await this.layersOver(
      items.map((it, i) => ({ session: it.session, offset: offsets[i], rows: rowsOf[i] })),
      total,
      plans,
    );
    for (const plan of plans) this.prefix!.commit(plan);
    for (const [i, it] of items.entries()) it.session.pos += rowsOf[i];
    if (!this.isTail) {
      const all = await be.read(ws.x, 0, total * E);
      return items.map((_, i) => ({
        hidden: all.slice(offsets[i] * E, (offsets[i] + rowsOf[i]) * E),
      }));
    }
    return await tail(offsets.map((o, i) => o + rowsOf[i] - 1), total);
  }

  /**
   * Check one input against its session (rows, token ids, hidden size, room in the context)
   * before anything touches its KV cache; returns its row count. Throws StageInputError.
   */
  validate(session: Session, input: StageInput): number {
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
  private async layersOver(
    seqs: { session: Session; offset: number; rows: number }[],
    total: number,
    plans: CapturePlan[] = [],
  ): Promise<void> {
    const be = this.backend;
    const ws = this.ws;
    const c = this.config;
    const eps = c.rmsEps;
    const positions = ws.positions.subarray(0, total);
    // gemma3 and phi3 scale q (ggml_scale by 1/sqrtf(head_dim)) and attend with scale 1;
    // llama.cpp takes Gemma 3 27B's (62 layers) from n_embd / n_head instead.
    const preScale = c.gemma || c.arch === "phi3";
    const qDim = c.gemma && c.nLayers === 62 ? Math.floor(c.nEmbd / c.nHeads) : c.headDim;
    const qScale = Math.fround(1 / Math.fround(Math.sqrt(qDim)));
    // One factor set for every row: forwardBatch runs sessions of different sets apart.
    const rope = this.ropeFactorsOf(seqs[0].session);
    if (seqs.some((s) => this.ropeFactorsOf(s.session).set !== rope.set)) {
      throw new Error("layersOver: sessions of one pass must share their RoPE factors");
    }
    // Between layers and between a layer's big matmuls: one layer of an 8B model over a
    // 128-row prompt chunk alone held the thread for seconds on a busy machine.
    let heldSince = performance.now();
    const breathe = async () => {
      if (performance.now() - heldSince > YIELD_AFTER_MS) {
        await new Promise((r) => setTimeout(r, 0));
        heldSince = performance.now();
      }
    };
    for (let l = 0; l < this.layers.length; l++) {
      await breathe();
      const w = this.layers[l];
      const sliding = isSlidingLayer(c, this.from + l);
      const ropeQ: RopeParams = {
        nHeads: c.nHeads,
        headDim: c.headDim,
        ropeDim: c.ropeDim,
        freqBase: sliding ? c.ropeFreqBaseSwa : c.ropeFreqBase,
        // llama.cpp scales only the global layers' RoPE (gemma3's linear factor 8)
        freqScale: sliding ? 1 : c.ropeFreqScale,
        neox: c.ropeNeox,
        freqFactors: rope.factors,
        attnFactor: c.ropeAttnFactor,
      };
      const ropeK: RopeParams = { ...ropeQ, nHeads: c.nKVHeads };
      const attn: AttentionParams = {
        nHeads: c.nHeads,
        nKVHeads: c.nKVHeads,
        headDim: c.headDim,
        scale: preScale ? 1 : 1 / Math.sqrt(c.headDim),
        window: sliding ? c.slidingWindow : 0,
      };
      // attention
      be.rmsNorm(ws.x, w.attnNorm, ws.xb, total, eps);
      const q = w.qNorm ? ws.qRaw : ws.q;
      const k = w.kNorm ? ws.kRaw : ws.k;
      this.matmuls([w.wq, w.wk, w.wv], ws.xb, [q, k, ws.v], total);
      await breathe();
      if (w.bq) be.addBias(q, w.bq, total);
      if (w.bk) be.addBias(k, w.bk, total);
      if (w.bv) be.addBias(ws.v, w.bv, total);
      // qwen3 / gemma3: RMSNorm of every head's q and k (rows of head_dim) before RoPE.
      if (w.qNorm) be.rmsNorm(ws.qRaw, w.qNorm, ws.q, total * c.nHeads, eps);
      if (w.kNorm) be.rmsNorm(ws.kRaw, w.kNorm, ws.k, total * c.nKVHeads, eps);
      be.rope(ws.q, positions, ropeQ);
      be.rope(ws.k, positions, ropeK);
      if (preScale) be.scale(ws.q, qScale, total * c.nHeads * c.headDim);
      for (const s of seqs) {
        be.storeKV(s.session.kv, l, ws.k, ws.v, s.session.pos, s.rows, s.offset);
      }
      if (be.attentionMany && seqs.length > 1) {
        const batch = seqs.map((s) => ({
          cache: s.session.kv,
          pos0: s.session.pos,
          rows: s.rows,
          rowOffset: s.offset,
        }));
        be.attentionMany(ws.q, l, ws.att, batch, attn);
      } else {
        for (const s of seqs) {
          be.attention(ws.q, s.session.kv, l, ws.att, s.session.pos, s.rows, attn, s.offset);
        }
      }
      for (const plan of plans) this.prefix!.copyLayer(plan, l, ws.k, ws.v);
      await breathe();
      be.matmul(w.wo, ws.att, ws.proj, total);
      this.residual(ws.proj, w.attnPostNorm, total);
      await breathe();
      // feed-forward
      be.rmsNorm(ws.x, w.ffnNorm, ws.xb, total, eps);
      if ("router" in w.ffn) await this.experts(w.ffn, total);
      else await this.dense(w.ffn, ws.xb, total, total * c.nFF, breathe);
      this.residual(ws.proj, w.ffnPostNorm, total);
    }
  }

  /** x += out (gemma3 first normalises a sub-block's output with its post-norm). */
  private residual(out: Buf, postNorm: Weight | undefined, total: number): void {
    const be = this.backend;
    const E = this.config.nEmbd;
    if (postNorm) {
      be.rmsNorm(out, postNorm, this.ws.xb, total, this.config.rmsEps);
      be.add(this.ws.x, this.ws.xb, total * E);
    } else {
      be.add(this.ws.x, out, total * E);
    }
  }

  /** Several weights over one input: one backend job where the backend can (matmulMany). */
  private matmuls(ws: Weight[], x: Buf, outs: Buf[], rows: number): void {
    const be = this.backend;
    if (be.matmulMany) be.matmulMany(ws, x, outs, rows);
    else for (let i = 0; i < ws.length; i++) be.matmul(ws[i], x, outs[i], rows);
  }

  /** ws.proj = down(act(gate · x) ⊙ up · x) over `rows` rows of `n` hidden values. */
  private async dense(
    f: DenseFFN,
    x: Buf,
    rows: number,
    n: number,
    breathe: () => Promise<void>,
  ): Promise<void> {
    const be = this.backend;
    const ws = this.ws;
    this.matmuls([f.gate, f.up], x, [ws.gate, ws.up], rows);
    await breathe();
    if (this.config.gemma) be.geglu(ws.gate, ws.up, ws.act, n);
    else be.swiglu(ws.gate, ws.up, ws.act, n);
    be.matmul(f.down, ws.act, ws.proj, rows);
  }

  /**
   * ws.proj = the mixture of experts of ws.xb: each token's experts' outputs times their weights,
   * summed in routing order (ggml_mul, then ggml_add of one view per used expert). Rows are
   * grouped by expert so each expert runs one batched matmul over all rows routed to it; only
   * the router logits come back to the host (routing decides which rows go where).
   */
  private async experts(f: ExpertFFN, total: number): Promise<void> {
    const be = this.backend;
    const ws = this.ws;
    const { nEmbd: E, nExperts: X, nExpertsUsed: K, nFFExpert: FE } = this.config;
    be.matmul(f.router, ws.xb, ws.router, total);
    const logits = await be.read(ws.router, 0, total * X);
    const { experts, weights } = routeTokens(logits, total, X, K);
    // slot i = token ⌊i / K⌋'s (i mod K)-th expert; each expert's rows, in slot order
    const slotsOf: number[][] = Array.from({ length: X }, () => []);
    for (let i = 0; i < total * K; i++) slotsOf[experts[i]].push(i);
    for (let e = 0; e < X; e++) {
      const slots = Int32Array.from(slotsOf[e]);
      const n = slots.length;
      if (n === 0) continue;
      const first = Int32Array.from({ length: n }, (_, r) => r);
      const tokens = slots.map((i) => Math.floor(i / K));
      be.copyRows(ws.xb, tokens, ws.expIn, first, E);
      await this.dense(f.experts[e], ws.expIn, n, n * FE, () => Promise.resolve());
      const scales = Float32Array.from(slots, (i) => weights[i]);
      be.copyRows(ws.proj, first, ws.slots, slots, E, scales);
    }
    be.sumRowGroups(ws.slots, ws.proj, total, K, E);
  }

  /**
   * The given rows of ws.x, in order: ws.x itself when they are all of it (pure decode),
   * otherwise gathered on the device into ws.last (far cheaper than logits for every prompt row,
   * and no round trip through the host).
   */
  private rowsOf(rows: number[], total: number): Buf {
    const ws = this.ws;
    if (rows.length === total && rows.every((r, i) => r === i)) return ws.x;
    this.backend.copyRows(
      ws.x,
      Int32Array.from(rows),
      ws.last,
      Int32Array.from(rows, (_, i) => i),
      this.config.nEmbd,
    );
    return ws.last;
  }

  /** Output norm and logits of the given rows of ws.x (one per sequence). */
  private async logitsOf(rows: number[], total: number): Promise<StageOutput[]> {
    const be = this.backend;
    const ws = this.ws;
    const V = this.config.nVocab;
    const out: StageOutput[] = [];
    for (let g = 0; g < rows.length; g += this.maxLogitRows) {
      const group = rows.slice(g, g + this.maxLogitRows);
      const src = this.rowsOf(group, total);
      be.rmsNorm(src, this.outputNorm!, ws.lastNorm, group.length, this.config.rmsEps);
      be.matmul(this.output!, ws.lastNorm, ws.logits, group.length);
      const logits = await be.read(ws.logits, 0, group.length * V);
      for (let i = 0; i < group.length; i++) out.push({ logits: logits.slice(i * V, (i + 1) * V) });
    }
    return out;
  }
}
