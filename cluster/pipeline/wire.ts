/** Conversions between pipeline values and their protobuf wire forms (proto/ is the contract). */
import { create } from "@bufbuild/protobuf";
import { f16ToF32, f32ToF16 } from "../../kernels/quant/mod.ts";
import {
  ChainHopSchema,
  Dtype,
  type ForwardResponse,
  type OpenSession,
  OpenSessionSchema,
  type SampledToken as WireToken,
  SampledTokenSchema,
  type SamplerParams as WireSampler,
  SamplerParamsSchema,
  type Tensor,
  TensorSchema,
  TokenLogprobSchema,
} from "../../proto/mod.ts";
import {
  decodeJsonConstraint,
  encodeJsonConstraint,
  JsonConstraintError,
} from "../../model/constrain/mod.ts";
import { MAX_LOGIT_BIAS } from "../../model/sampler.ts";
import { RpcFailure } from "../rpc/errors.ts";
import type { SampledToken, StageResult, TailSampling } from "./stage_frame.ts";
import type { SessionOpen } from "./links.ts";

/** A frame's bytes do not match its shape/dtype; a precise INVALID_ARGUMENT. */
export class WireFormatError extends Error {
  override name = "WireFormatError";
  readonly rpcCode = "invalid_argument";
}

/** Encode `[rows × cols]` f32 values as a wire tensor (f32 exact, or f16 to halve the bytes). */
export function encodeTensor(values: Float32Array, shape: number[], dtype = Dtype.F32): Tensor {
  return create(TensorSchema, { shape, dtype, data: encodeValues(values, dtype) });
}

/** The raw bytes of `values` in `dtype`, little-endian. */
export function encodeValues(values: Float32Array, dtype: Dtype): Uint8Array {
  if (dtype === Dtype.F16) {
    const out = new Uint16Array(values.length);
    for (let i = 0; i < values.length; i++) out[i] = f32ToF16(values[i]);
    return new Uint8Array(out.buffer);
  }
  // Copy into a fresh, aligned buffer: the caller may reuse `values`.
  return new Uint8Array(values.slice().buffer);
}

/** Decode wire bytes to f32, checking the byte count against shape and dtype. */
export function decodeValues(
  data: Uint8Array,
  shape: readonly number[],
  dtype: Dtype,
): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const size = dtype === Dtype.F32 ? 4 : dtype === Dtype.F16 ? 2 : 0;
  if (size === 0) {
    throw new WireFormatError(`unsupported activation dtype ${Dtype[dtype] ?? dtype}`);
  }
  if (data.byteLength !== n * size) {
    throw new WireFormatError(
      `tensor of shape [${shape.join(", ")}] in ${Dtype[dtype]} needs ${
        n * size
      } bytes, got ${data.byteLength}`,
    );
  }
  // Copy to a fresh, aligned buffer: protobuf byte fields are views at arbitrary offsets, and
  // may be Node Buffers, whose slice() is a view rather than a copy.
  const bytes = new Uint8Array(data);
  if (dtype === Dtype.F32) return new Float32Array(bytes.buffer, 0, n);
  const half = new Uint16Array(bytes.buffer, 0, n);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = f16ToF32(half[i]);
  return out;
}

/** Tail sampling settings → wire SamplerParams. */
export function samplingToWire(s: TailSampling): WireSampler {
  return create(SamplerParamsSchema, {
    temperature: s.temperature,
    topK: s.topK,
    topP: s.topP,
    minP: s.minP,
    repeatPenalty: s.repeatPenalty,
    repeatLastN: s.repeatLastN,
    frequencyPenalty: s.frequencyPenalty,
    presencePenalty: s.presencePenalty,
    seed: s.seed === undefined ? undefined : BigInt(s.seed),
    topLogprobs: s.topLogprobs ?? 0,
    json: s.json ? encodeJsonConstraint(s.json) : "",
    skipLogprob: s.logprob === false,
    logitBias: { ...s.logitBias },
  });
}

/** Wire SamplerParams → tail sampling settings (unset fields stay unset: engine defaults). */
export function samplingFromWire(w: WireSampler): TailSampling {
  const out: TailSampling = {};
  if (w.temperature !== undefined) out.temperature = w.temperature;
  if (w.topK !== undefined) out.topK = w.topK;
  if (w.topP !== undefined) out.topP = w.topP;
  if (w.minP !== undefined) out.minP = w.minP;
  if (w.repeatPenalty !== undefined) out.repeatPenalty = w.repeatPenalty;
  if (w.repeatLastN !== undefined) out.repeatLastN = w.repeatLastN;
  if (w.frequencyPenalty !== undefined) out.frequencyPenalty = w.frequencyPenalty;
  if (w.presencePenalty !== undefined) out.presencePenalty = w.presencePenalty;
  if (w.seed !== undefined) {
    if (w.seed > 0xffffffffn) throw new WireFormatError(`seed ${w.seed} does not fit in 32 bits`);
    out.seed = Number(w.seed);
  }
  if (w.topLogprobs > 20) throw new WireFormatError(`top_logprobs ${w.topLogprobs} exceeds 20`);
  if (w.topLogprobs) out.topLogprobs = w.topLogprobs;
  if (w.skipLogprob) out.logprob = false;
  const bias = Object.entries(w.logitBias);
  if (bias.length > MAX_LOGIT_BIAS) {
    throw new WireFormatError(
      `logit_bias holds ${bias.length} entries (at most ${MAX_LOGIT_BIAS})`,
    );
  }
  if (bias.some(([, b]) => !Number.isFinite(b))) {
    throw new WireFormatError("logit_bias values must be finite numbers");
  }
  if (bias.length) out.logitBias = Object.fromEntries(bias.map(([id, b]) => [Number(id), b]));
  if (w.json) {
    try {
      out.json = decodeJsonConstraint(w.json);
    } catch (e) {
      if (e instanceof JsonConstraintError) throw new WireFormatError(`json: ${e.message}`);
      throw e;
    }
  }
  return out;
}

/** A session's opening → the wire OpenSession (sampling and the downstream stages, once). */
export function openToWire(open: SessionOpen, dtype: Dtype): OpenSession {
  return create(OpenSessionSchema, {
    model: open.model,
    placementEpoch: open.epoch,
    maxContext: open.maxContext,
    responseDtype: dtype,
    sampler: open.sampling ? samplingToWire(open.sampling) : undefined,
    downstream: open.downstream.map((h) =>
      create(ChainHopSchema, {
        nodeId: h.nodeId,
        fromLayer: h.from,
        toLayer: h.to,
        version: BigInt(h.version ?? 0),
      })
    ),
    prefixTokens: open.prefixIds ? Array.from(open.prefixIds) : [],
    replyDirect: open.replyDirect ?? false,
  });
}

/** The wire OpenSession of session `sessionId` → its opening. */
export function openFromWire(sessionId: string, w: OpenSession): SessionOpen {
  return {
    sessionId,
    maxContext: w.maxContext,
    model: w.model,
    epoch: w.placementEpoch,
    sampling: w.sampler ? samplingFromWire(w.sampler) : undefined,
    downstream: w.downstream.map((h) => ({
      nodeId: h.nodeId,
      from: h.fromLayer,
      to: h.toLayer,
      version: h.version ? Number(h.version) : undefined,
    })),
    ...(w.prefixTokens.length ? { prefixIds: tokenIds(w.prefixTokens, "prefix_tokens") } : {}),
    ...(w.replyDirect ? { replyDirect: true } : {}),
  };
}

/** A stage's answer (a result with rows, or a token) from the wire. */
export function resultFromWire(r: ForwardResponse): StageResult {
  switch (r.result.case) {
    case "hidden":
      return {
        kind: "hidden",
        hidden: decodeValues(r.result.value.data, r.result.value.shape, r.result.value.dtype),
        computeMs: r.computeMs,
      };
    case "logits":
      return {
        kind: "logits",
        logits: decodeValues(r.result.value.data, r.result.value.shape, r.result.value.dtype),
        computeMs: r.computeMs,
      };
    case "token":
      return {
        kind: "token",
        token: {
          id: r.result.value.tokenId,
          logprob: r.result.value.logprob,
          top: r.result.value.topLogprobs.map((t) => ({
            id: t.tokenId,
            logit: NaN,
            logprob: t.logprob,
          })),
        },
        computeMs: r.computeMs,
      };
    default:
      throw new Error("the stage answered a frame with rows without a result");
  }
}

/** A sampled token as the wire carries it (the inverse of resultFromWire's token case). */
export function tokenToWire(token: SampledToken): WireToken {
  return create(SampledTokenSchema, {
    tokenId: token.id,
    logprob: token.logprob,
    topLogprobs: token.top.map((t) =>
      create(TokenLogprobSchema, { tokenId: t.id, logprob: t.logprob })
    ),
  });
}

/**
 * Token ids from the wire (uint32) as the stages hold them (Int32Array), refusing one at 2^31 or
 * above: it wrapped to a negative id, which a tail took silently and which, passed on in a
 * prefix, failed as an INTERNAL "bug in the agent".
 */
export function tokenIds(ids: readonly number[], field: string): Int32Array {
  const out = new Int32Array(ids.length);
  for (let i = 0; i < ids.length; i++) {
    if (ids[i] > 0x7fffffff) {
      throw new RpcFailure("invalid_argument", `${field} holds token id ${ids[i]}, not below 2^31`);
    }
    out[i] = ids[i];
  }
  return out;
}
