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
  OpenSessionSchema,
} from "../../proto/mod.ts";
import { type SessionLink, type StageLink, StageLinkError } from "./head.ts";
import type { StageFrame, StageResult } from "./stage_host.ts";
import { decodeValues, encodeValues, samplingToWire } from "./wire.ts";

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
  model: string;
  epoch: bigint;
  /** Activation dtype on the wire; F32 keeps outputs bit-identical to a single node. */
  dtype?: Dtype;
}

/** Reaches a stage on another agent over `transport`. */
export class RemoteStageLink implements StageLink {
  private readonly client;

  constructor(
    readonly nodeId: string,
    readonly from: number,
    readonly to: number,
    transport: Transport,
    private readonly opts: RemoteStageOptions,
  ) {
    this.client = createClient(InferenceService, transport);
  }

  openSession(sessionId: string, maxContext: number): Promise<SessionLink> {
    const queue = new FrameQueue();
    const abort = new AbortController();
    const responses = this.client.forward(queue, { signal: abort.signal })[Symbol.asyncIterator]();
    // The client starts the call at once but observes its failure only in the first next(): ask
    // for the first answer now, so a stage that refuses the connection (a certificate from
    // another CA) fails this session's first step instead of escaping as an unhandled rejection.
    let first: Promise<IteratorResult<ForwardResponse>> | undefined = responses.next();
    first.catch(() => {});
    const nextResponse = () => {
      const p = first ?? responses.next();
      first = undefined;
      return p;
    };
    let step = 0n;
    let closed = false;
    const dtype = this.opts.dtype ?? Dtype.F32;
    const fail = (e: unknown): never => {
      if (e instanceof ConnectError && !STAGE_FAILURE_CODES.has(e.code)) throw e;
      throw new StageLinkError((e as Error).message, this.nodeId);
    };
    const link: SessionLink = {
      step: async (frame: StageFrame): Promise<StageResult> => {
        const rows = frame.tokens.length;
        const msg = create(ActivationFrameSchema, {
          sessionId,
          step,
          fromLayer: this.from,
          tokens: Array.from(frame.tokens),
          dtype,
        });
        if (step === 0n) {
          msg.open = create(OpenSessionSchema, {
            model: this.opts.model,
            placementEpoch: this.opts.epoch,
            maxContext,
            responseDtype: dtype,
          });
        }
        if (frame.hidden) {
          msg.shape = [rows, frame.hidden.length / rows];
          msg.data = encodeValues(frame.hidden, dtype);
        }
        if (frame.sampling) msg.sampler = samplingToWire(frame.sampling);
        step++;
        queue.push(msg);
        let next: IteratorResult<ForwardResponse>;
        try {
          next = await nextResponse();
        } catch (e) {
          return fail(e);
        }
        if (next.done) fail(new Error("the stage ended the stream without answering"));
        return fromResponse(next.value as ForwardResponse);
      },
      close: async (reason: string): Promise<void> => {
        if (closed) return;
        closed = true;
        try {
          queue.push(create(ActivationFrameSchema, {
            sessionId,
            step: step++,
            fromLayer: this.from,
            close: create(CloseSessionSchema, { reason }),
          }));
          queue.end();
          // Drain the close acknowledgement, but never hang on a dead stage.
          let timer: ReturnType<typeof setTimeout> | undefined;
          await Promise.race([
            nextResponse(),
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
    return Promise.resolve(link);
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
