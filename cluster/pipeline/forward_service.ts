/**
 * InferenceService.Forward, the stage side: one bidirectional stream per session; each
 * ActivationFrame is run through the hosted layers and answered with exactly one response.
 */
import { create } from "@bufbuild/protobuf";
import {
  type ActivationFrame,
  Dtype,
  type ForwardResponse,
  ForwardResponseSchema,
  SampledTokenSchema,
  TokenLogprobSchema,
} from "../../proto/mod.ts";
import { RpcFailure } from "../rpc/mod.ts";
import type { StageHost } from "./stage_host.ts";
import { decodeValues, encodeTensor, samplingFromWire } from "./wire.ts";

/** What the Forward handler needs: the current stage (it may be replaced on re-placement). */
export interface ForwardContext {
  /** The stage this agent hosts now, or undefined when it hosts none. */
  host(): StageHost | undefined;
  /** Placement epoch of the hosted stage; frames planned for another epoch are refused. */
  epoch(): bigint;
  /** Called after each frame with its compute time and bytes in/out (metrics). */
  onFrame?(info: { computeMs: number; bytesIn: number; bytesOut: number }): void;
}

/** The Forward handler: frames in, one response per frame out, KV cache freed when the stream ends. */
export function forwardHandler(ctx: ForwardContext) {
  return async function* forward(
    frames: AsyncIterable<ActivationFrame>,
  ): AsyncIterable<ForwardResponse> {
    let sessionId: string | undefined;
    let host: StageHost | undefined;
    let nextStep = 0n;
    try {
      for await (const frame of frames) {
        if (frame.step !== nextStep) {
          throw new RpcFailure(
            "failed_precondition",
            `session ${frame.sessionId}: expected step ${nextStep}, got ${frame.step} (the KV cache would be wrong)`,
          );
        }
        nextStep++;
        if (frame.open) {
          host = ctx.host();
          if (!host) throw new RpcFailure("unavailable", "this agent hosts no layers right now");
          if (frame.open.model && frame.open.model !== host.model) {
            throw new RpcFailure(
              "failed_precondition",
              `this agent serves model ${host.model}, not ${frame.open.model}`,
            );
          }
          if (frame.open.placementEpoch && frame.open.placementEpoch !== ctx.epoch()) {
            throw new RpcFailure(
              "failed_precondition",
              `placement epoch ${frame.open.placementEpoch} is stale (now ${ctx.epoch()}); re-read the placement`,
            );
          }
          if (frame.fromLayer !== host.range.from) {
            throw new RpcFailure(
              "failed_precondition",
              `this stage starts at layer ${host.range.from}, the frame at ${frame.fromLayer}`,
            );
          }
          host.open(frame.sessionId, frame.open.maxContext);
          sessionId = frame.sessionId;
        }
        if (!host || sessionId === undefined) {
          throw new RpcFailure(
            "failed_precondition",
            "the first frame of a stream must open a session",
          );
        }
        if (frame.sessionId !== sessionId) {
          throw new RpcFailure(
            "invalid_argument",
            `frame for session ${frame.sessionId} on the stream of ${sessionId}`,
          );
        }
        const response = create(ForwardResponseSchema, {
          sessionId,
          step: frame.step,
          nextLayer: host.range.to,
        });
        const nRows = frame.tokens.length;
        if (nRows > 0) {
          const tokens = Int32Array.from(frame.tokens);
          const hidden = frame.data.byteLength > 0
            ? decodeValues(frame.data, frame.shape, frame.dtype)
            : undefined;
          if (hidden && frame.shape[0] !== nRows) {
            throw new RpcFailure(
              "invalid_argument",
              `frame has ${nRows} tokens but ${frame.shape[0]} rows`,
            );
          }
          const sampling = frame.sampler ? samplingFromWire(frame.sampler) : undefined;
          const out = await host.step(sessionId, { tokens, hidden, sampling });
          response.computeMs = out.computeMs;
          const dtype = frame.open?.responseDtype || frame.dtype || Dtype.F32;
          if (out.kind === "hidden") {
            const cols = out.hidden.length / nRows;
            response.result = {
              case: "hidden",
              value: encodeTensor(out.hidden, [nRows, cols], dtype),
            };
          } else if (out.kind === "logits") {
            response.result = {
              case: "logits",
              value: encodeTensor(out.logits, [1, out.logits.length], Dtype.F32),
            };
          } else {
            response.result = {
              case: "token",
              value: create(SampledTokenSchema, {
                tokenId: out.token.id,
                logprob: out.token.logprob,
                topLogprobs: out.token.top.map((t) =>
                  create(TokenLogprobSchema, { tokenId: t.id, logprob: t.logprob })
                ),
              }),
            };
          }
          ctx.onFrame?.({
            computeMs: out.computeMs,
            bytesIn: frame.data.byteLength,
            bytesOut: response.result.case === "token" ? 0 : response.result.value.data.byteLength,
          });
        }
        if (frame.close) {
          host.close(sessionId);
          response.closed = true;
        }
        yield response;
        if (response.closed) return;
      }
    } finally {
      // The stream ended (closed, broken or cancelled): never leak the KV cache.
      if (host && sessionId !== undefined) host.close(sessionId);
    }
  };
}
