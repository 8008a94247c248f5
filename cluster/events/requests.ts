/**
 * Request events of one Generate, published by the head: started, first token, progress (at
 * most every `progressMs`), recovering, and how it ended.
 *
 * @example
 * ```ts
 * const t = new RequestTracker(hub, { requestId, headNodeId: "a", model });
 * t.started(["a", "b"]);
 * t.token(); // per sampled token
 * t.finished(RequestPhase.COMPLETED, 41.5);
 * ```
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import { RequestEventSchema, RequestPhase } from "../../proto/mod.ts";
import type { EventHub } from "./hub.ts";

/** Publishes the phases of one request. */
export class RequestTracker {
  private readonly t0 = performance.now();
  private tokens = 0;
  private firstAt = 0;
  private lastProgress = 0;
  private ended = false;

  constructor(
    private readonly hub: EventHub,
    private readonly req: { requestId: string; headNodeId: string; model: string },
    private readonly progressMs = 250,
  ) {}

  private publish(
    phase: RequestPhase,
    extra: { detail?: string; tokensPerSecond?: number; stageNodeIds?: string[] } = {},
  ) {
    this.hub.publish({
      case: "request",
      value: create(RequestEventSchema, {
        ...this.req,
        phase,
        completionTokens: this.tokens,
        elapsedMs: performance.now() - this.t0,
        detail: extra.detail ?? "",
        tokensPerSecond: extra.tokensPerSecond ?? this.rate(),
        stageNodeIds: extra.stageNodeIds ?? [],
      }),
    });
  }

  /** Decode speed since the first token. */
  private rate(): number {
    if (this.tokens < 2) return 0;
    const s = (performance.now() - this.firstAt) / 1000;
    return s > 0 ? (this.tokens - 1) / s : 0;
  }

  /** Accepted; `stages` are the node ids serving it, in layer order (when known). */
  started(stages: string[] = []): void {
    this.publish(RequestPhase.STARTED, { stageNodeIds: stages });
  }

  /** One token sampled. */
  token(): void {
    this.tokens++;
    const now = performance.now();
    if (this.tokens === 1) {
      this.firstAt = now;
      this.lastProgress = now;
      this.publish(RequestPhase.FIRST_TOKEN);
    } else if (now - this.lastProgress >= this.progressMs) {
      this.lastProgress = now;
      this.publish(RequestPhase.PROGRESS);
    }
  }

  /** A stage died; `detail` says which and what happens. */
  recovering(detail: string, stages: string[] = []): void {
    this.publish(RequestPhase.RECOVERING, { detail, stageNodeIds: stages });
  }

  /** Ended: COMPLETED, CANCELLED or FAILED (with the error text). Only the first call counts. */
  finished(
    phase: RequestPhase.COMPLETED | RequestPhase.CANCELLED | RequestPhase.FAILED,
    tokensPerSecond?: number,
    detail = "",
  ): void {
    if (this.ended) return;
    this.ended = true;
    this.publish(phase, { detail, tokensPerSecond });
  }
}
