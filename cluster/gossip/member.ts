/**
 * Members as the gossip layer's users see them (snapshots, events, counters) and as the state
 * machine keeps them.
 *
 * @module
 */
import type { Clock, TimerHandle } from "./clock.ts";
import type { NodeStatus } from "./codec.ts";
import type { Config } from "./config.ts";
import type { NodeMetadata } from "./metadata.ts";
import type { DropReason } from "./net.ts";
import type { Transport } from "./transport.ts";

/** A member as the public API shows it. */
export interface Member {
  /** Node id. */
  id: string;
  /** Gossip address `host:port`. */
  addr: string;
  /** Current state. */
  status: NodeStatus;
  /** Incarnation: bumped by the member itself to refute suspicion or publish new metadata. */
  incarnation: number;
  /** Decoded metadata, or null if the bytes do not decode (a newer, unknown format). */
  meta: NodeMetadata | null;
  /** The raw metadata bytes. */
  metaBytes: Uint8Array;
}

/** Kinds of membership events. */
export type EventType = "join" | "update" | "suspect" | "alive" | "dead" | "leave" | "conflict";

/** One membership event. */
export interface MemberEvent {
  /** What happened. */
  type: EventType;
  /** The member, after the change. */
  member: Member;
  /** `clock.now()` when it happened. */
  at: number;
}

/** A joiner's id is already used by a live member at another address. */
export class DuplicateNodeIdError extends Error {
  /** @param message who holds the id, and what to do */
  constructor(message: string) {
    super(message);
    this.name = "DuplicateNodeIdError";
  }
}

/** Counters, for tests, metrics and the benchmark. */
export interface Stats {
  /** Dropped incoming packets/streams per reason. */
  droppedPackets: Record<DropReason, number>;
  /** Datagrams sent / received. */
  packetsSent: number;
  /** Datagrams received. */
  packetsReceived: number;
  /** Probes started / that ended in suspicion. */
  probes: number;
  /** Probes that got no ack at all. */
  failedProbes: number;
  /** Probes rescued by the TCP fallback. */
  tcpFallbackAcks: number;
  /** Push-pull exchanges completed / failed. */
  pushPulls: number;
  /** Push-pull exchanges that failed. */
  pushPullFailures: number;
  /** Smoothed round trip of acked probes, ms (SRTT, α = 1/8 as in TCP); 0 before the first. */
  probeRttMs: number;
}

/** A member's record in the state machine's table. */
export interface NodeState {
  id: string;
  addr: string;
  incarnation: number;
  status: NodeStatus;
  meta: Uint8Array;
  decoded?: NodeMetadata | null;
  stateChange: number;
}

/**
 * The member table and what comes with it, as the mechanisms beside the state machine
 * (probe.ts, pushpull.ts) read it; GossipState provides it.
 */
export interface MemberTable {
  readonly id: string;
  readonly cfg: Config;
  readonly clock: Clock;
  readonly transport: Transport;
  readonly stats: Stats;
  readonly nodes: Map<string, NodeState>;
  /** Members reaped from `nodes`, remembered for reconnect attempts. */
  readonly departed: Map<string, { addr: string; since: number }>;
  /** Run `fn` after `ms` unless the member stops first. */
  after(ms: number, fn: () => void): TimerHandle;
}
