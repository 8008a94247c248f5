/**
 * Membership events with the state each node had before, so viewers can tell "b became
 * suspect" from "b is new".
 *
 * @example
 * ```ts
 * const members = new MembershipTracker(hub);
 * gossip.on("suspect", (e) => members.publish(memberToNodeInfo(e.member)));
 * ```
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import { MembershipEventSchema, type NodeInfo, NodeState } from "../../proto/mod.ts";
import type { EventHub } from "./hub.ts";

/** Remembers each node's last published state. */
export class MembershipTracker {
  private readonly states = new Map<string, NodeState>();

  constructor(private readonly hub: EventHub) {}

  /** Publish `node` as it is now, with its previous state (UNSPECIFIED when new). */
  publish(node: NodeInfo, now = Date.now()): void {
    const previousState = this.states.get(node.id) ?? NodeState.UNSPECIFIED;
    this.states.set(node.id, node.state);
    if (node.stateChangedUnixMs === 0n && previousState !== node.state) {
      node.stateChangedUnixMs = BigInt(now);
    }
    this.hub.publish({
      case: "membership",
      value: create(MembershipEventSchema, { node, previousState }),
    });
  }
}
