/**
 * What a stage takes and answers, transport-free: frames of rows, tail sampling settings, the
 * results (hidden rows, logits, a sampled token, or a partial frame's "prefilled"), and the
 * session errors a stage raises. Links, the Forward service and StageHost all speak these.
 *
 * @module
 */
import type { SamplerSettings, TokenLogprob } from "../../model/sampler.ts";

/**
 * Sampler settings for the tail (a JSON constraint included), plus how many alternatives to
 * report.
 */
export interface TailSampling extends SamplerSettings {
  topLogprobs?: number;
}

/** One frame entering a stage: token ids (head) or hidden rows (others), in order. */
export interface StageFrame {
  /** Token id of every row; the head embeds them, the tail feeds them to the penalty history. */
  tokens: Int32Array;
  /** Hidden rows `[tokens.length × nEmbd]`; absent at the head. */
  hidden?: Float32Array;
  /**
   * At a sampling tail that is the whole model: up to this many further tokens it may decode
   * greedily after this frame's, their ids kept on the device (LlamaStage.decodeGreedy), when
   * the backend can and nothing else waits (see StageHost.lookahead). Absent or 0: none.
   */
  lookahead?: number;
  /**
   * A prompt chunk that is not the prompt's last (a stage pipelining a long prompt down the
   * chain): the tail runs it into the KV cache and its sampler's history, and answers
   * `prefilled` instead of a token.
   */
  partial?: boolean;
  /**
   * On a session's first frame with rows: its first positions came from the prefix cache when
   * the session opened (SessionLink.cachedTokens, the least any stage of the chain restored),
   * so the rows start at this position; each stage keeps that much of what it restored.
   */
  cachedPrefix?: number;
}

/** A token the tail sampled, with its log-probability and alternatives. */
export interface SampledToken {
  id: number;
  logprob: number;
  top: TokenLogprob[];
}

/** What a stage answers for one frame. */
export type StageResult =
  | { kind: "hidden"; hidden: Float32Array; computeMs: number }
  | {
    kind: "token";
    token: SampledToken;
    computeMs: number;
    /**
     * Tokens decoded after `token` for the frame's lookahead, in order; all but the last are
     * in the session's KV cache already, so the next frame brings the last one.
     */
    more?: SampledToken[];
  }
  | { kind: "logits"; logits: Float32Array; computeMs: number }
  /** The tail's answer to a partial frame: its rows are in the KV cache. */
  | { kind: "prefilled"; computeMs: number }
  /** The tail sent the frame's token on the head's reply stream (replies.ts). */
  | { kind: "replied"; computeMs: number };

/** A session id is unknown, already open, or the stage is full; the message says which. */
export class StageSessionError extends Error {
  override name = "StageSessionError";
  constructor(
    message: string,
    readonly code: "not_found" | "exists" | "exhausted" | "invalid" | "unavailable" | "corrupt",
  ) {
    super(message);
  }
  /** Status for the RPC layer (cluster/rpc maps it to a ConnectError code). */
  get rpcCode(): string {
    return {
      not_found: "not_found",
      exists: "already_exists",
      exhausted: "resource_exhausted",
      invalid: "invalid_argument",
      unavailable: "unavailable",
      // The model computed NaN or +∞ (its weights hold them): no retry or replay can help.
      corrupt: "data_loss",
    }[this.code];
  }
}
