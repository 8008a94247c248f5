/**
 * ClusterService handlers: `StreamUpdates` over an {@linkcode EventHub} (history and a snapshot
 * first when asked, the answering node's metrics interleaved), and `ExecuteCommand` over the
 * commands an agent can really carry out (drain, re-plan, log level), forwarding a command
 * meant for another node to that node.
 *
 * ```ts
 * r.service(ClusterService, clusterService({ hub, localId: "a", snapshot, commands }));
 * ```
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  type ClusterService,
  type ExecuteCommandRequest,
  type ExecuteCommandResponse,
  ExecuteCommandResponseSchema,
  MembershipEventSchema,
  type NodeInfo,
  type NodeMetrics,
  NodeState,
  type Placement,
  PlacementEventSchema,
  type StreamUpdatesRequest,
  type StreamUpdatesResponse,
  StreamUpdatesResponseSchema,
  UpdateKind,
} from "../../proto/mod.ts";
import { RpcFailure } from "../rpc/errors.ts";
import type { EventHub, StampedEvent } from "./hub.ts";
import { isLogLevel, LOG_LEVELS, type LogLevel } from "./log_level.ts";
import { type PeerHandle, PeerMetricsRelay } from "./peer_metrics.ts";

/** What a command did (or, dry, would do). */
export interface CommandResult {
  message: string;
  placement?: Placement;
}

/** The agent's side of ExecuteCommand. Each returns what happened, in words. */
export interface ClusterCommands {
  /** Stop offering layers on this node so the placement moves them elsewhere. */
  drain(dryRun: boolean): Promise<CommandResult> | CommandResult;
  /** Re-plan now. `model` empty = the served model. */
  replan(model: string, dryRun: boolean): Promise<CommandResult> | CommandResult;
  /** Change this node's log level. */
  setLogLevel(level: LogLevel, dryRun: boolean): Promise<CommandResult> | CommandResult;
  /** Run `req` on another node (its own ExecuteCommand), for commands aimed at it. */
  forward(nodeId: string, req: ExecuteCommandRequest): Promise<ExecuteCommandResponse>;
}

/** Options of {@linkcode clusterService}. */
export interface ClusterServiceOptions {
  hub: EventHub;
  /** This node's id. */
  localId: string;
  /** Members and placement now, for `include_snapshot`. */
  snapshot: () => { members: NodeInfo[]; placement?: Placement };
  /** A load sample of this node, streamed to viewers that want metrics. */
  metrics?: () => NodeMetrics;
  /** Milliseconds between metrics samples on a stream. Default 1000. */
  metricsIntervalMs?: number;
  /** Live peers whose load samples are relayed to viewers that want metrics. */
  peers?: () => PeerHandle[];
  commands: ClusterCommands;
  /** StreamUpdates viewers served at once. Default 64. */
  maxViewers?: number;
}

/** Events describing the current state: one membership event per member, then the placement. */
export function snapshotEvents(
  members: NodeInfo[],
  placement: Placement | undefined,
  now = Date.now(),
): StampedEvent[] {
  const out: StampedEvent[] = members.map((node) => ({
    timestampUnixMs: now,
    event: {
      case: "membership",
      value: create(MembershipEventSchema, { node, previousState: NodeState.UNSPECIFIED }),
    },
  }));
  if (placement) {
    out.push({
      timestampUnixMs: now,
      event: {
        case: "placement",
        value: create(PlacementEventSchema, { placement, reason: "current placement" }),
      },
    });
  }
  return out;
}

/** ClusterService handlers. */
export function clusterService(opts: ClusterServiceOptions): ServiceImpl<typeof ClusterService> {
  const relay = opts.peers
    ? new PeerMetricsRelay({ peers: opts.peers, intervalMs: opts.metricsIntervalMs })
    : undefined;
  const maxViewers = opts.maxViewers ?? 64;
  let viewers = 0;
  return {
    // Each viewer holds a queue of up to 1024 events and a metrics timer: bounded, so a client
    // opening streams without end cannot grow the agent's memory with them.
    async *streamUpdates(req, ctx) {
      if (viewers >= maxViewers) {
        throw new RpcFailure(
          "resource_exhausted",
          `${viewers} viewers are watching this node's updates (at most ${maxViewers}); ` +
            `close one or watch another node`,
        );
      }
      viewers++;
      try {
        yield* streamUpdates(opts, relay, req, ctx);
      } finally {
        viewers--;
      }
    },
    executeCommand: (req) => executeCommand(opts, req),
  };
}

async function* streamUpdates(
  opts: ClusterServiceOptions,
  relay: PeerMetricsRelay | undefined,
  req: StreamUpdatesRequest,
  ctx: HandlerContext,
): AsyncIterable<StreamUpdatesResponse> {
  let prefix: StampedEvent[] = [];
  if (req.includeSnapshot) {
    const { members, placement } = opts.snapshot();
    prefix = [...opts.hub.recent(), ...snapshotEvents(members, placement)];
  }
  const sub = opts.hub.subscribe({ kinds: req.kinds, prefix });
  const wantsMetrics = req.kinds.length === 0 || req.kinds.includes(UpdateKind.METRICS);
  let timer: ReturnType<typeof setInterval> | undefined;
  if (wantsMetrics && opts.metrics) {
    const sample = () => {
      try {
        sub.deliver({
          timestampUnixMs: Date.now(),
          event: { case: "metrics", value: opts.metrics!() },
        });
      } catch { /* a failed sample skips one tick */ }
    };
    sample();
    timer = setInterval(sample, opts.metricsIntervalMs ?? 1000);
  }
  const stopPeers = wantsMetrics && relay
    ? relay.subscribe((m) =>
      sub.deliver({ timestampUnixMs: Date.now(), event: { case: "metrics", value: m } })
    )
    : undefined;
  const onAbort = () => sub.close();
  ctx.signal.addEventListener("abort", onAbort);
  try {
    for await (const e of sub) {
      yield create(StreamUpdatesResponseSchema, {
        sequence: BigInt(e.sequence),
        timestampUnixMs: BigInt(Math.round(e.timestampUnixMs)),
        event: e.event,
      });
    }
  } finally {
    clearInterval(timer);
    stopPeers?.();
    ctx.signal.removeEventListener("abort", onAbort);
    sub.close();
  }
}

async function executeCommand(
  opts: ClusterServiceOptions,
  req: ExecuteCommandRequest,
): Promise<ExecuteCommandResponse> {
  const cmd = req.command;
  const done = (r: CommandResult) =>
    create(ExecuteCommandResponseSchema, { message: r.message, placement: r.placement });
  switch (cmd.case) {
    case "drainNode": {
      const id = cmd.value.nodeId;
      if (!id) throw new RpcFailure("invalid_argument", "drain_node.node_id is empty; name a node");
      if (id !== opts.localId) return await opts.commands.forward(id, req);
      return done(await opts.commands.drain(req.dryRun));
    }
    case "replan":
      return done(await opts.commands.replan(cmd.value.model, req.dryRun));
    case "setLogLevel": {
      const { nodeId, level } = cmd.value;
      if (!isLogLevel(level)) {
        throw new RpcFailure(
          "invalid_argument",
          `unknown log level "${level}"; use one of ${LOG_LEVELS.join(", ")}`,
        );
      }
      if (nodeId && nodeId !== opts.localId) return await opts.commands.forward(nodeId, req);
      return done(await opts.commands.setLogLevel(level, req.dryRun));
    }
    default:
      throw new RpcFailure(
        "invalid_argument",
        "no command given; set one of drain_node, replan, set_log_level",
      );
  }
}
