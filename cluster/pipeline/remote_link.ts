/** A StageLink to a stage on another agent: one InferenceService.Forward stream per session. */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import type { Transport } from "@connectrpc/connect";
import {
  type ActivationFrame,
  ActivationFrameSchema,
  CloseSessionSchema,
  Dtype,
  type ForwardResponse,
  InferenceService,
} from "../../proto/mod.ts";
import {
  type SessionLink,
  type SessionOpen,
  type StageLink,
  StageLinkError,
  StaleEpochError,
} from "./head.ts";
import type { StageFrame, StageResult } from "./stage_host.ts";
import { decodeValues, encodeValues, openToWire } from "./wire.ts";

/** Codes that mean the stage (not the request) failed: the head re-places and replays. */
const STAGE_FAILURE_CODES = new Set([
  Code.Unavailable,
  Code.Canceled,
  Code.Aborted,
  Code.DeadlineExceeded,
  Code.Unknown,
  Code.NotFound,
  Code.FailedPrecondition,
  Code.Internal,
]);

/** A push-driven async iterable: the request side of a bidirectional stream. */
class FrameQueue implements AsyncIterable<ActivationFrame> {
  private items: ActivationFrame[] = [];
  private waiting?: (r: IteratorResult<ActivationFrame>) => void;
  private done = false;

  push(frame: ActivationFrame): void {
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = undefined;
      w({ value: frame, done: false });
    } else this.items.push(frame);
  }

  end(): void {
    this.done = true;
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = undefined;
      w({ value: undefined, done: true });
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<ActivationFrame> {
    // Connect drives request streams with next/return/throw, as it would a generator.
    const finish = (): Promise<IteratorResult<ActivationFrame>> => {
      this.end();
      return Promise.resolve({ value: undefined, done: true });
    };
    return {
      next: () => {
        const item = this.items.shift();
        if (item) return Promise.resolve({ value: item, done: false });
        if (this.done) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => (this.waiting = resolve));
      },
      return: finish,
      throw: finish,
    };
  }
}

/** Options of a remote stage link. */
export interface RemoteStageOptions {
  /** Activation dtype on the wire; F32 keeps outputs bit-identical to a single node. */
  dtype?: Dtype;
  /** Announcement version of the stage (see StageLink.version). */
  version?: number;
}

/** Reaches a stage on another agent over `transport`. */
export class RemoteStageLink implements StageLink {
  private readonly client;

  constructor(
    readonly nodeId: string,
    readonly from: number,
    readonly to: number,
    transport: Transport,
    private readonly opts: RemoteStageOptions = {},
  ) {
    this.client = createClient(InferenceService, transport);
  }

  /** Announcement version of the stage. */
  get version(): number | undefined {
    return this.opts.version;
  }

  async openSession(open: SessionOpen): Promise<SessionLink> {
    const queue = new FrameQueue();
    const abort = new AbortController();
    const responses = this.client.forward(queue, { signal: abort.signal })[Symbol.asyncIterator]();
    let step = 0n;
    let closed = false;
    const dtype = this.opts.dtype ?? Dtype.F32;
    const fail = (e: unknown): never => {
      if (e instanceof ConnectError && !STAGE_FAILURE_CODES.has(e.code)) throw e;
      throw new StageLinkError((e as Error).message, this.nodeId);
    };
    /** Send one frame and read its one answer; a failure reported from down the chain throws. */
    const exchange = async (msg: ActivationFrame): Promise<ForwardResponse> => {
      queue.push(msg);
      let next: IteratorResult<ForwardResponse>;
      try {
        next = await responses.next();
      } catch (e) {
        return fail(e);
      }
      if (next.done) return fail(new Error("the stage ended the stream without answering"));
      const r = next.value as ForwardResponse;
      if (r.failure) {
        abort.abort();
        closed = true;
        if (r.failure.staleEpoch) throw new StaleEpochError(r.failure.message, r.failure.nodeId);
        throw new StageLinkError(r.failure.message, r.failure.nodeId || this.nodeId);
      }
      return r;
    };
    // The opening travels alone and is answered once every stage after this one has opened
    // too, so a refused certificate or a stale epoch anywhere fails here, attributed.
    try {
      await exchange(create(ActivationFrameSchema, {
        sessionId: open.sessionId,
        step: step++,
        fromLayer: this.from,
        dtype,
        open: openToWire(open, dtype),
      }));
    } catch (e) {
      abort.abort();
      throw e;
    }
    return {
      step: async (frame: StageFrame): Promise<StageResult> => {
        const rows = frame.tokens.length;
        const msg = create(ActivationFrameSchema, {
          sessionId: open.sessionId,
          step: step++,
          fromLayer: this.from,
          tokens: Array.from(frame.tokens),
          dtype,
        });
        if (frame.hidden) {
          msg.shape = [rows, frame.hidden.length / rows];
          msg.data = encodeValues(frame.hidden, dtype);
        }
        return fromResponse(await exchange(msg));
      },
      close: async (reason: string): Promise<void> => {
        if (closed) return;
        closed = true;
        try {
          queue.push(create(ActivationFrameSchema, {
            sessionId: open.sessionId,
            step: step++,
            fromLayer: this.from,
            close: create(CloseSessionSchema, { reason }),
          }));
          queue.end();
          // Drain the close acknowledgement, but never hang on a dead stage.
          let timer: ReturnType<typeof setTimeout> | undefined;
          await Promise.race([
            responses.next(),
            new Promise((r) => (timer = setTimeout(r, 1000))),
          ]);
          clearTimeout(timer);
        } catch {
          // The stage is gone; its KV cache went with it.
        } finally {
          abort.abort();
        }
      },
    };
  }
}
function fromResponse(r: ForwardResponse): StageResult {
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
