/**
 * The agent's TCP data plane (cluster/rpc/tcp_plane.ts), started when it runs without TLS: the
 * model chunks it serves, the Forward streams of its stage and heads' reply streams to it as a
 * tail, on one port (`--data-port`),
 * announced in gossip so peers reach it. Under mTLS both stay on gRPC.
 *
 * @module
 */
import { DEFAULT_MAX_MESSAGE_BYTES, startTcpPlane, type TcpPlane } from "../rpc/mod.ts";
import { chunkProtocol, CHUNKS_PREAMBLE } from "../transfer/mod.ts";
import {
  FORWARD_PREAMBLE,
  forwardProtocol,
  REPLIES_PREAMBLE,
  repliesProtocol,
} from "../pipeline/mod.ts";
import type { AgentMetrics } from "../telemetry/mod.ts";
import type { AgentState } from "./state.ts";
import type { HeadService } from "./head_service.ts";
import type { PlacementLoop } from "./placement_loop.ts";
import { forwardContext } from "./inference_rpc.ts";

/** Start the data plane on the agent's bind address. */
export function startDataPlane(
  s: AgentState,
  head: HeadService,
  loop: PlacementLoop,
  metrics: AgentMetrics,
): Promise<TcpPlane> {
  // (startTcpPlane listens before it returns: a port in use throws at once)
  return Promise.resolve().then(() =>
    startTcpPlane({
      host: s.config.bind,
      port: s.config.dataPort,
      protocols: {
        [CHUNKS_PREAMBLE]: chunkProtocol((req, signal) => s.transfer.fetchChunks(req, signal)),
        [FORWARD_PREAMBLE]: forwardProtocol(
          forwardContext(s, head, loop, metrics),
          DEFAULT_MAX_MESSAGE_BYTES,
          // Sessions through this stage, and the ones a replay opens before the old ones close.
          2 * s.config.maxSessions + 16,
        ),
        // Heads' reply streams to this agent as a tail: one per session, as Forward streams.
        [REPLIES_PREAMBLE]: repliesProtocol(s.replies, 2 * s.config.maxSessions + 16),
      },
      log: (msg) => s.log("debug", msg),
      warn: (msg, fields) => s.log("warn", msg, fields),
    })
  ).catch((e: Error) => {
    // Worded as the other listeners word it: "Address already in use (os error 98)" named
    // neither the port nor the flag.
    const port = s.config.dataPort;
    throw new Error(
      e instanceof Deno.errors.AddrInUse
        ? `cannot listen for the data plane on ${s.config.bind}:${port}: port ${port} is ` +
          `already in use; choose another with --data-port (0 picks a free one)`
        : `cannot listen for the data plane on ${s.config.bind}:${port}: ${e.message}`,
    );
  });
}
