/**
 * The membership view the discovery services answer from. The agent plugs in an adapter over
 * the gossip memberlist; {@linkcode StaticMembership} is an in-memory view for a single node,
 * tools and tests.
 *
 * @module
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  type NodeInfo,
  NodeInfoSchema,
  type NodeInfoSchema as NodeInfoSchemaType,
  NodeState,
  type Placement,
} from "../../proto/mod.ts";
import { RpcFailure } from "../rpc/errors.ts";
import { joinHostPort } from "../net/mod.ts";

/** Fields of a NodeInfo to build one from (any subset; the rest take proto defaults). */
export type NodeInfoInit = MessageInitShape<typeof NodeInfoSchemaType>;

/** What a registration hands back to the newcomer. */
export interface RegisterResult {
  /** Gossip seeds, "host:port", the newcomer should join to get the full state. */
  gossipSeeds: string[];
}

/**
 * A node's view of the cluster. Implementations must be cheap to read (the handlers call
 * `members()` per request) and may lag the truth by a gossip round.
 */
export interface MembershipView {
  /** Name of the cluster (--cluster-name), to keep clusters from merging by accident. */
  readonly clusterName: string;
  /** This node as it sees itself (state ALIVE while running, LEFT after leaving). */
  local(): NodeInfo;
  /** Every member known, this node included, in any state. */
  members(): NodeInfo[];
  /** The placement in force, if a model is placed. */
  placement?(): Placement | undefined;
  /** Why no placement was found for the model, when none was (undefined otherwise). */
  placementError?(): string | undefined;
  /**
   * Accept a node that announced itself over RPC (the gossip adapter starts a push-pull with
   * it); returns where it should join the gossip. Throw {@linkcode RpcFailure} to refuse.
   */
  register(node: NodeInfo): Promise<RegisterResult>;
  /**
   * Make `nodeId` leave: the local node leaves gracefully (broadcast, hand back its layers);
   * another node is marked LEFT (an operator removing a node that cannot say goodbye itself).
   * Resolves to the node's state afterwards; unknown ids must throw RpcFailure("not_found").
   */
  leave(nodeId: string, reason: string): Promise<NodeState>;
}

/** Build a NodeInfo message from plain fields. */
export function nodeInfo(init: NodeInfoInit): NodeInfo {
  return create(NodeInfoSchema, init);
}

/** Options of {@linkcode StaticMembership}. */
export interface StaticMembershipOptions {
  /** Cluster name. */
  clusterName?: string;
  /** This node. */
  local: NodeInfoInit;
  /** Other members known from the start. */
  peers?: NodeInfoInit[];
  /** Called when the local node leaves (e.g. to stop the agent). */
  onLeave?: (reason: string) => void | Promise<void>;
}

/**
 * An in-memory membership view: registration adds a member, leaving marks it LEFT. What a
 * single agent without gossip, llmctl's tests, and the services' tests use.
 */
export class StaticMembership implements MembershipView {
  /** Cluster name. */
  readonly clusterName: string;
  #local: NodeInfo;
  #peers = new Map<string, NodeInfo>();
  #placement: Placement | undefined;
  #onLeave?: (reason: string) => void | Promise<void>;

  /** Start from the local node and optional peers. */
  constructor(opts: StaticMembershipOptions) {
    this.clusterName = opts.clusterName ?? "default";
    this.#local = nodeInfo({ state: NodeState.ALIVE, ...opts.local });
    for (const p of opts.peers ?? []) this.upsert(p);
    this.#onLeave = opts.onLeave;
  }

  /** Add or replace a member (state defaults to ALIVE). */
  upsert(init: NodeInfoInit): NodeInfo {
    const n = nodeInfo({ state: NodeState.ALIVE, stateChangedUnixMs: BigInt(Date.now()), ...init });
    if (n.id === this.#local.id) this.#local = n;
    else this.#peers.set(n.id, n);
    return n;
  }

  /** Set the placement returned by {@linkcode placement}. */
  setPlacement(p: Placement | undefined): void {
    this.#placement = p;
  }

  /** This node as it sees itself. */
  local(): NodeInfo {
    return this.#local;
  }

  /** Every member, this node first. */
  members(): NodeInfo[] {
    return [this.#local, ...this.#peers.values()];
  }

  /** The placement set with {@linkcode setPlacement}. */
  placement(): Placement | undefined {
    return this.#placement;
  }

  /** Add the node as ALIVE; the seeds are this node's addresses at its gossip port. */
  register(node: NodeInfo): Promise<RegisterResult> {
    if (node.id === this.#local.id) {
      return Promise.reject(
        new RpcFailure(
          "already_exists",
          `node id "${node.id}" is this node's own id; give the new node another --node-id`,
        ),
      );
    }
    this.upsert({ ...node, state: NodeState.ALIVE });
    const seeds = this.#local.gossipPort
      ? this.#local.addresses.map((a) => joinHostPort(a, this.#local.gossipPort))
      : [];
    return Promise.resolve({ gossipSeeds: seeds });
  }

  /** Mark the node LEFT (calling onLeave when it is this one); NOT_FOUND for strangers. */
  async leave(nodeId: string, reason: string): Promise<NodeState> {
    const id = nodeId || this.#local.id;
    const now = BigInt(Date.now());
    if (id === this.#local.id) {
      this.#local = nodeInfo({ ...this.#local, state: NodeState.LEFT, stateChangedUnixMs: now });
      await this.#onLeave?.(reason);
      return NodeState.LEFT;
    }
    const peer = this.#peers.get(id);
    if (!peer) {
      throw new RpcFailure(
        "not_found",
        `no member "${id}" in cluster "${this.clusterName}"; list members with llmctl nodes list`,
      );
    }
    this.#peers.set(id, nodeInfo({ ...peer, state: NodeState.LEFT, stateChangedUnixMs: now }));
    return NodeState.LEFT;
  }
}
