/** MembershipView over the gossip memberlist: what DiscoveryService and NodeService answer from. */
import { create } from "@bufbuild/protobuf";
import type { Member, Memberlist } from "../gossip/mod.ts";
import {
  LayerRangeSchema,
  type NodeInfo,
  NodeInfoSchema,
  NodeState,
  type Placement,
  ResourceInfoSchema,
} from "../../proto/mod.ts";
import { RpcFailure } from "../rpc/mod.ts";
import { loadavg } from "./resources.ts";
import type { MembershipView, RegisterResult } from "./membership.ts";

const STATES: Record<string, NodeState> = {
  alive: NodeState.ALIVE,
  suspect: NodeState.SUSPECT,
  dead: NodeState.DEAD,
  left: NodeState.LEFT,
};

/** What an agent knows beyond gossip metadata, to fill the NodeInfo fields gossip lacks. */
export interface NodeInfoExtras {
  /** Layers of `model` in all (0 when unknown). */
  totalLayers?: (model: string) => number;
  /** Layers of the served model that fit a memory budget of `bytes` (0 when none is served). */
  maxLayers?: (bytes: number) => number;
  /** When this agent saw the member's state change, Unix ms (0 when never). */
  stateChangedAt?: (id: string) => number;
}

/** Convert a gossip member to the wire NodeInfo. */
export function memberToNodeInfo(m: Member, extras: NodeInfoExtras = {}): NodeInfo {
  const meta = m.meta;
  // Defensive: one member's odd address must not fail the whole listing (a NaN port made every
  // `nodes list` and the TUI's update stream fail); gossip drops such members too.
  const colon = m.addr.lastIndexOf(":");
  const parsed = Number(m.addr.slice(colon + 1));
  const [host, port] = [
    colon < 0 ? m.addr : m.addr.slice(0, colon),
    Number.isInteger(parsed) && parsed >= 0 && parsed <= 65535 ? parsed : 0,
  ];
  return create(NodeInfoSchema, {
    id: m.id,
    addresses: meta?.addresses.length ? meta.addresses : [host.replace(/^\[|\]$/g, "")],
    rpcPort: meta?.rpcPort ?? 0,
    gossipPort: port,
    metricsPort: meta?.metricsPort ?? 0,
    httpPort: meta?.httpPort ?? 0,
    state: STATES[m.status] ?? NodeState.UNSPECIFIED,
    version: meta?.version ?? "",
    resources: meta
      ? create(ResourceInfoSchema, {
        cpuCores: meta.resources.cores,
        memoryBudgetBytes: BigInt(meta.resources.memoryBytes),
        memoryTotalBytes: BigInt(meta.resources.memoryTotal ?? 0),
        threads: meta.resources.threads ?? 0,
        maxLayers: extras.maxLayers?.(meta.resources.memoryBytes) ?? 0,
        usedLayers: meta.hosted ? Math.max(0, meta.hosted.to - meta.hosted.from) : 0,
      })
      : undefined,
    hosted: meta?.hosted
      ? create(LayerRangeSchema, {
        model: meta.hosted.model,
        fromLayer: meta.hosted.from,
        toLayer: meta.hosted.to,
        totalLayers: extras.totalLayers?.(meta.hosted.model) ?? 0,
      })
      : undefined,
    backend: meta?.resources.backend ?? "",
    adapter: meta?.resources.adapter ?? "",
    calibrationGflops: meta?.resources.speed ?? 0,
    incarnation: BigInt(m.incarnation),
    stateChangedUnixMs: BigInt(extras.stateChangedAt?.(m.id) ?? 0),
    stageError: meta?.stageError ?? "",
    drained: meta?.drained ?? false,
  });
}

/** Options of the gossip-backed view. */
export interface GossipViewOptions {
  clusterName: string;
  placement?: () => Placement | undefined;
  /** Why planning found no placement (undefined: it found one, or has not planned). */
  placementError?: () => string | undefined;
  /** Called when a client asks this node itself to leave. */
  onLocalLeave?: () => Promise<void> | void;
  /** What the agent knows beyond gossip (layer counts, state change times). */
  extras?: NodeInfoExtras;
  /**
   * How long a dead or departed member stays in the view after it died or left, ms (default
   * {@linkcode DEFAULT_DEPARTED_RETENTION_MS}). Gossip forgets it much sooner (its
   * `gossipToTheDeadTime`: 10–60 s), which is about the protocol, not about what users see.
   */
  departedRetentionMs?: number;
  /** Unix ms now (tests). */
  now?: () => number;
}

/** Dead and departed members stay listed this long by default: 10 minutes. */
export const DEFAULT_DEPARTED_RETENTION_MS = 600_000;

/** Most dead or departed members remembered beyond gossip's own table (the oldest go first). */
const MAX_DEPARTED = 10_000;

/**
 * A MembershipView that reads the live gossip state, and keeps listing members that died or
 * left for `departedRetentionMs` after gossip reaped them (with the time they died or left).
 */
export class GossipMembershipView implements MembershipView {
  readonly clusterName: string;
  /** Members last seen dead or left, by id, with when (Unix ms); oldest first. */
  readonly #departed = new Map<string, { member: Member; at: number }>();
  readonly #now: () => number;

  constructor(private readonly gossip: Memberlist, private readonly opts: GossipViewOptions) {
    this.clusterName = opts.clusterName;
    this.#now = opts.now ?? Date.now;
    const gone = (e: { member: Member }) => {
      this.#departed.delete(e.member.id);
      this.#departed.set(e.member.id, { member: e.member, at: this.#now() });
      if (this.#departed.size > MAX_DEPARTED) {
        this.#departed.delete(this.#departed.keys().next().value!);
      }
    };
    gossip.on("dead", gone);
    gossip.on("leave", gone);
    gossip.on("join", (e) => this.#departed.delete(e.member.id));
  }

  local(): NodeInfo {
    return this.#measured(memberToNodeInfo(this.gossip.localNode, this.opts.extras));
  }

  /**
   * `info` with this machine's available memory and load when it is this agent's: gossip
   * carries neither, so a peer's stay 0, and before, this agent's own did too (`nodes list
   * --json` said 0 bytes available on a machine with 18 GB free).
   */
  #measured(info: NodeInfo): NodeInfo {
    if (info.id !== this.gossip.localNode.id || !info.resources) return info;
    info.resources.memoryAvailableBytes = BigInt(Deno.systemMemoryInfo().available);
    info.resources.loadAverage1m = loadavg()[0];
    return info;
  }

  /** Every member gossip knows, and those it has forgotten that died or left recently. */
  members(): NodeInfo[] {
    const known = this.gossip.allMembers();
    const ids = new Set(known.map((m) => m.id));
    const keep = this.opts.departedRetentionMs ?? DEFAULT_DEPARTED_RETENTION_MS;
    const now = this.#now();
    const out = known.map((m) => this.#measured(memberToNodeInfo(m, this.opts.extras)));
    for (const [id, d] of this.#departed) {
      if (now - d.at > keep) {
        this.#departed.delete(id);
        continue;
      }
      if (ids.has(id)) continue;
      const info = memberToNodeInfo(d.member, this.opts.extras);
      if (!info.stateChangedUnixMs) info.stateChangedUnixMs = BigInt(Math.round(d.at));
      out.push(info);
    }
    return out;
  }

  placement(): Placement | undefined {
    return this.opts.placement?.();
  }

  placementError(): string | undefined {
    return this.opts.placementError?.();
  }

  register(_node: NodeInfo): Promise<RegisterResult> {
    // Newcomers join the gossip through us; they learn everyone else by push-pull.
    return Promise.resolve({ gossipSeeds: [this.gossip.transport.addr] });
  }

  async leave(nodeId: string, _reason: string): Promise<NodeState> {
    if (nodeId === this.gossip.localNode.id) {
      await this.opts.onLocalLeave?.();
      return NodeState.LEFT;
    }
    if (!this.gossip.member(nodeId)) {
      throw new RpcFailure("not_found", `no member ${nodeId} in this cluster`);
    }
    throw new RpcFailure(
      "failed_precondition",
      `only ${nodeId} itself can leave; call LeaveCluster on its own endpoint (or stop it: gossip marks it dead)`,
    );
  }
}
