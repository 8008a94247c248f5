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
  NodeService,
} from "../../proto/mod.ts";
import {
  DEFAULT_MAX_MESSAGE_BYTES,
  isPlaneBusy,
  isPlaneUnavailable,
  MessageQueue,
  openTcpBidi,
  probeTcpPlane,
  type RpcTransport,
} from "../rpc/mod.ts";
import { tracingEnabled } from "../telemetry/tracing.ts";
import { settleWithin } from "../deadline.ts";
import type { ReplyStream, SessionLink, SessionOpen, StageLink } from "./links.ts";
import {
  localExhaustion,
  StageBusyError,
  StageLinkError,
  StaleEpochError,
} from "./stage_errors.ts";
import type { StageFrame, StageResult } from "./stage_frame.ts";
import { encodeValues, openToWire, resultFromWire } from "./wire.ts";
import { FORWARD_METHOD, FORWARD_PREAMBLE } from "./forward_service.ts";
import { openReplyStream } from "./replies.ts";
import { HopSilentError, type HopWatch, watchAnswer } from "./hop_watch.ts";

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

/** One session's Forward stream as the link drives it: frames out, responses in. */
interface ForwardChannel {
  send(frame: ActivationFrame): void;
  /** The next response; undefined when the stage ended the stream. */
  receive(): Promise<ForwardResponse | undefined>;
  /** No more frames from this side. */
  end(): void;
  abort(): void;
  /** The data plane (host:port) the frames travel, when they do not go over gRPC. */
  plane?: string;
}

/** Forward through Connect's client (any transport; interceptors run). */
function connectChannel(transport: Transport): ForwardChannel {
  const frames = new MessageQueue<ActivationFrame>();
  const abort = new AbortController();
  const client = createClient(InferenceService, transport);
  const responses = client.forward(frames, { signal: abort.signal })[Symbol.asyncIterator]();
  return {
    send: (frame) => frames.push(frame),
    receive: async () => {
      const r = await responses.next();
      return r.done ? undefined : r.value as ForwardResponse;
    },
    end: () => frames.end(),
    abort: () => abort.abort(),
  };
}

/**
 * The session's channel. Tracing on: Connect's client (the trace context travels through its
 * interceptors). Else the stage's TCP data plane when it offers one (no TLS), falling back to
 * gRPC when it cannot be reached (a firewall that opens only the RPC port); else the lean gRPC
 * path when the transport offers it (an agent's own gRPC transport); else Connect's client.
 */
async function openChannel(transport: Transport, dataEndpoint?: string): Promise<ForwardChannel> {
  if (tracingEnabled) return connectChannel(transport);
  if (dataEndpoint) {
    try {
      const call = await openTcpBidi(
        dataEndpoint,
        FORWARD_PREAMBLE,
        FORWARD_METHOD,
        DEFAULT_MAX_MESSAGE_BYTES,
      );
      return Object.assign(call, { plane: dataEndpoint });
    } catch (e) {
      if (!isPlaneUnavailable(e)) throw e;
    }
  }
  const rpc = transport as Partial<RpcTransport>;
  if (!rpc.openBidi) return connectChannel(transport);
  return await rpc.openBidi(FORWARD_METHOD);
}

/** Options of a remote stage link. */
export interface RemoteStageOptions {
  /** Activation dtype on the wire; F32 keeps outputs bit-identical to a single node. */
  dtype?: Dtype;
  /** Announcement version of the stage (see StageLink.version). */
  version?: number;
  /** host:port of the stage's TCP data plane (none: gRPC only). */
  dataEndpoint?: string;
  /**
   * Aborted when the stage's agent is known gone (gossip): its open streams end at once, as a
   * failure of this stage, instead of waiting on a connection nobody will answer.
   */
  lost?: AbortSignal;
  /** This agent's node id, sent with the opening (OpenSession.sender). */
  sender?: string;
  /** How a frame's wait for its answer is watched (hop_watch.ts); default DEFAULT_HOP_WATCH. */
  watch?: HopWatch;
}

/** Reaches a stage on another agent over `transport`. */
export class RemoteStageLink implements StageLink {
  constructor(
    readonly nodeId: string,
    readonly from: number,
    readonly to: number,
    private readonly transport: Transport,
    private readonly opts: RemoteStageOptions = {},
  ) {}

  /** Announcement version of the stage. */
  get version(): number | undefined {
    return this.opts.version;
  }

  /**
   * Whether the stage's RPC port answers (over the path its frames take, or beside it) and, when
   * the frames travel its data plane (`plane`), whether that port takes a connection too.
   */
  private probe(signal: AbortSignal, plane?: string): Promise<unknown> {
    const rpc = createClient(NodeService, this.transport).healthCheck({}, { signal });
    return plane ? Promise.all([rpc, probeTcpPlane(plane, signal)]) : rpc;
  }

  /**
   * A reply stream from this stage as the tail of session `sessionId`, over its TCP data plane;
   * undefined without one or when it cannot be opened (tokens then come along the chain).
   */
  async openReplies(sessionId: string): Promise<ReplyStream | undefined> {
    const lost = this.opts.lost;
    if (!this.opts.dataEndpoint || lost?.aborted) return undefined;
    const stream = await openReplyStream(this.opts.dataEndpoint, sessionId).catch(() => undefined);
    if (!stream || !lost) return stream;
    if (lost.aborted) {
      stream.close();
      return undefined;
    }
    // The tail's agent gone: the stream ends (its next token fails), as the chain's hops do.
    const onLost = () => stream.close();
    lost.addEventListener("abort", onLost, { once: true });
    return {
      next: () => stream.next(),
      close: () => {
        lost.removeEventListener("abort", onLost);
        stream.close();
      },
    };
  }

  async openSession(open: SessionOpen): Promise<SessionLink> {
    let step = 0n;
    let closed = false;
    const dtype = this.opts.dtype ?? Dtype.F32;
    const lost = this.opts.lost;
    /** Why the stage's agent is known gone (set when `lost` aborts). */
    let gone: unknown;
    const fail = (e: unknown): never => {
      if (gone) throw new StageLinkError((gone as Error).message ?? String(gone), this.nodeId);
      // This agent out of descriptors (its connect failed with EMFILE): not the stage's fault.
      const local = localExhaustion(this.nodeId, e);
      if (local) throw local;
      if (e instanceof ConnectError && !STAGE_FAILURE_CODES.has(e.code)) throw e;
      throw new StageLinkError((e as Error).message, this.nodeId);
    };
    if (lost?.aborted) {
      gone = lost.reason;
      return fail(gone);
    }
    let channel: ForwardChannel;
    try {
      channel = await openChannel(this.transport, this.opts.dataEndpoint);
    } catch (e) {
      return fail(e);
    }
    /** The stage's agent is gone: end the stream, and say so rather than "cancelled". */
    const onLost = () => {
      gone = lost!.reason;
      channel.abort();
    };
    lost?.addEventListener("abort", onLost, { once: true });
    // Declared gone while this side was connecting: the event came before the listener.
    if (lost?.aborted) onLost();
    /** The stream is over: abort it and stop watching (the signal lives as long as the peer). */
    const finish = () => {
      channel.abort();
      lost?.removeEventListener("abort", onLost);
    };
    /** Send one frame and read its one answer; a failure reported from down the chain throws. */
    const exchange = async (msg: ActivationFrame): Promise<ForwardResponse> => {
      channel.send(msg);
      let r: ForwardResponse | undefined;
      try {
        // A link broken while gossip still sees the stage would otherwise wait for TCP.
        r = await watchAnswer(
          channel.receive(),
          (signal) => this.probe(signal, channel.plane),
          this.opts.watch,
        );
      } catch (e) {
        if (e instanceof HopSilentError) channel.abort();
        return fail(e);
      }
      if (!r) return fail(new Error("the stage ended the stream without answering"));
      if (r.closed && !msg.close) {
        // The stage closed the session under this frame: this side's own close (a cancel)
        // needs no result; otherwise the stage gave the session up, a failure of the stage (a
        // `closed` answer taken for a result read as a finished chunk, or failed the request).
        if (closed) throw new Error(`session ${open.sessionId} was closed`);
        return fail(new Error("the stage closed the session under a frame still running"));
      }
      if (r.failure) {
        finish();
        closed = true;
        if (r.failure.staleEpoch) throw new StaleEpochError(r.failure.message, r.failure.nodeId);
        throw new StageLinkError(r.failure.message, r.failure.nodeId || this.nodeId);
      }
      return r;
    };
    // The opening travels alone and is answered once every stage after this one has opened
    // too, so a refused certificate or a stale epoch anywhere fails here, attributed.
    const opening = () =>
      create(ActivationFrameSchema, {
        sessionId: open.sessionId,
        step: 0n,
        fromLayer: this.from,
        // The range this stage was chosen by: one that hosts another by now refuses as stale.
        toLayer: this.to,
        dtype,
        open: { ...openToWire(open, dtype), sender: this.opts.sender ?? "" },
      });
    let opened: ForwardResponse;
    try {
      try {
        opened = await exchange(opening());
      } catch (e) {
        // A data plane at its connection limit: this stream goes over gRPC instead.
        if (!isPlaneBusy(e)) throw e;
        channel.abort();
        channel = await openChannel(this.transport).catch(fail);
        opened = await exchange(opening());
      }
      step = 1n;
    } catch (e) {
      finish();
      // A stage (this one or one further down) with no room for another session.
      if (e instanceof ConnectError && e.code === Code.ResourceExhausted) {
        throw new StageBusyError(e.rawMessage, this.nodeId);
      }
      throw e;
    }
    return {
      // Never more than the opening asked about (a peer's claim is bounded by the prompt).
      cachedTokens: Math.min(opened.cachedTokens, open.prefixIds?.length ?? 0),
      step: async (frame: StageFrame): Promise<StageResult> => {
        const rows = frame.tokens.length;
        const msg = create(ActivationFrameSchema, {
          sessionId: open.sessionId,
          step: step++,
          fromLayer: this.from,
          tokens: Array.from(frame.tokens),
          dtype,
          partial: frame.partial ?? false,
          cachedPrefix: frame.cachedPrefix ?? 0,
        });
        if (frame.hidden) {
          msg.shape = [rows, frame.hidden.length / rows];
          msg.data = encodeValues(frame.hidden, dtype);
        }
        const r = await exchange(msg);
        if (frame.partial && r.result.case === undefined) {
          return { kind: "prefilled", computeMs: r.computeMs };
        }
        if (r.replied) return { kind: "replied", computeMs: r.computeMs };
        return resultFromWire(r);
      },
      close: async (reason: string): Promise<void> => {
        if (closed) return;
        closed = true;
        try {
          channel.send(create(ActivationFrameSchema, {
            sessionId: open.sessionId,
            step: step++,
            fromLayer: this.from,
            close: create(CloseSessionSchema, { reason }),
          }));
          channel.end();
          // Drain the close acknowledgement, but never hang on a dead stage.
          await settleWithin(channel.receive(), 1000);
        } catch {
          // The stage is gone; its KV cache went with it.
        } finally {
          finish();
        }
      },
    };
  }
}
