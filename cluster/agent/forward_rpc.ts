/**
 * InferenceService.Generate and Cancel on an agent that serves no model (`--no-model`): the
 * request message is sent as it came (every field) to a member that serves the model, over the
 * agent's peer connection (mTLS with the cluster's certificates when configured), and that
 * member's responses are yielded unchanged. The client going away, its deadline and Cancel by
 * request id reach the serving agent; a serving agent that fails before its first response is
 * replaced once, one that dies after it ends the call UNAVAILABLE.
 *
 * @module
 */
import { Code, ConnectError, createClient, type HandlerContext } from "@connectrpc/connect";
import {
  type CancelRequest,
  type CancelResponse,
  type GenerateRequest,
  type GenerateResponse,
  InferenceService,
} from "../../proto/mod.ts";
import type { Member } from "../gossip/mod.ts";
import { RpcFailure } from "../rpc/mod.ts";
import type { AgentMetrics } from "../telemetry/mod.ts";
import type { AgentState } from "./state.ts";
import type { Peers } from "./peers.ts";
import { FORWARDED_HEADER, ForwardTargets } from "./forward_target.ts";

/**
 * Codes a serving agent fails with where another might not: its connection broke, it is
 * shutting down, its queue is full. A request refused with one before any response is sent to
 * one more agent; the others (a bad argument, an unknown model) would fail there the same way.
 */
const RETRYABLE = new Set([
  Code.Unavailable,
  Code.Unknown,
  Code.Internal,
  Code.Aborted,
  Code.ResourceExhausted,
]);

/** How long a forwarded Cancel waits for the serving agent. */
const CANCEL_TIMEOUT_MS = 5000;

/** Passes requests an agent that serves no model receives on to agents that serve one. */
export class RequestForwarder {
  /** Where each forwarded request runs, by request id (for Cancel). */
  readonly #running = new Map<string, Member>();

  constructor(
    private readonly s: AgentState,
    private readonly peers: Peers,
    private readonly metrics: AgentMetrics,
    /** Open requests per member and the turn of equal choices (shared with the HTTP proxy). */
    readonly targets: ForwardTargets = new ForwardTargets(
      s.nodeId,
      () => s.gossip.members(),
      s.untrusted,
    ),
  ) {}

  /**
   * Whether a request with these headers is forwarded: this agent serves no model, the request
   * was not forwarded to it already, and another live member serves one. Otherwise it is
   * answered here (the head says why it cannot serve it).
   */
  forwards(headers: Headers | { get(name: string): string | null | undefined }): boolean {
    return !this.s.model && !headers.get(FORWARDED_HEADER) && this.targets.any();
  }

  /** Generate through a serving agent: its responses, unchanged. */
  async *generate(req: GenerateRequest, ctx: HandlerContext): AsyncIterable<GenerateResponse> {
    const tried = new Set<string>();
    let target = this.targets.choose(req.model);
    for (;;) {
      if (!target) {
        throw new RpcFailure(
          "unavailable",
          `${this.s.nodeId} serves no model (--no-model) and no live agent serving ` +
            `${req.model || "a model"} took the request; send it again once one is up`,
        );
      }
      const at = target;
      tried.add(at.id);
      const lost = this.peers.lostSignal(at.id);
      const end = this.targets.open(at.id);
      if (req.requestId) this.#running.set(req.requestId, at);
      let seenId = "";
      let sent = 0;
      this.metrics.onForwarded("grpc");
      try {
        const client = createClient(InferenceService, await this.peers.transportTo(at));
        const stream = client.generate(req, {
          // Aborted when the client goes away or gossip declares the target dead: a host lost
          // without a FIN would otherwise hold the call open for hours.
          signal: AbortSignal.any([ctx.signal, lost]),
          headers: { [FORWARDED_HEADER]: this.s.nodeId },
          timeoutMs: ctx.timeoutMs(),
        });
        for await (const m of stream) {
          if (!seenId && m.requestId && !req.requestId) {
            // The serving agent named it: a client reading it off the first response can Cancel
            // it here.
            seenId = m.requestId;
            this.#running.set(seenId, at);
          }
          sent++;
          yield m;
        }
        return;
      } catch (e) {
        if (ctx.signal.aborted) throw e;
        const ce = ConnectError.from(e);
        const broken = lost.aborted || RETRYABLE.has(ce.code) || ce.code === Code.Canceled;
        // Refused before any response for a reason another agent may not share: one more try.
        const next = broken && sent === 0 && tried.size === 1
          ? this.targets.choose(req.model, tried)
          : undefined;
        if (next) {
          this.s.log("warn", "forwarded request failed before its first response; retrying", {
            node: at.id,
            next: next.id,
            error: ce.rawMessage,
          });
          target = next;
          continue;
        }
        // The serving agent's own answer (a bad argument, an unknown model, a full queue).
        if (!broken || (!lost.aborted && ce.code === Code.ResourceExhausted)) throw ce;
        const why = lost.aborted ? String(lost.reason) : ce.rawMessage;
        const who = `${at.id}, which ${this.s.nodeId} (--no-model) forwarded this request to,`;
        throw new RpcFailure(
          "unavailable",
          sent === 0
            ? `${who} failed: ${why}; send it again`
            : `${who} failed after ${sent} responses: ${why}; the output is incomplete, send ` +
              `it again`,
        );
      } finally {
        end();
        for (const id of [req.requestId, seenId]) {
          if (id && this.#running.get(id) === at) this.#running.delete(id);
        }
      }
    }
  }

  /**
   * Cancel a request this agent forwarded, at the agent running it; undefined when none runs
   * under that id (the head may hold it).
   */
  async cancel(req: CancelRequest): Promise<CancelResponse | undefined> {
    const target = this.#running.get(req.requestId);
    if (!target) return undefined;
    const client = createClient(InferenceService, await this.peers.transportTo(target));
    return await client.cancel(req, {
      timeoutMs: CANCEL_TIMEOUT_MS,
      headers: { [FORWARDED_HEADER]: this.s.nodeId },
    });
  }
}
