/**
 * A link to a remote stage made when first used: a chain names stages by node, and the transport
 * (and data-plane endpoint) to each is looked up only when a session opens on it.
 *
 * @module
 */
import {
  type ChainHop,
  localExhaustion,
  RemoteStageLink,
  type SessionOpen,
  type StageLink,
  StageLinkError,
  StaleEpochError,
} from "../pipeline/mod.ts";
import type { RpcTransport } from "../rpc/mod.ts";

/** A remote link whose transport is made on first use (a chain names stages, not endpoints). */
export class LazyRemoteLink implements StageLink {
  constructor(
    private readonly hop: ChainHop,
    private readonly transport: () => Promise<
      { transport: RpcTransport; dataEndpoint?: string; lost?: AbortSignal; sender?: string }
    >,
  ) {}
  get nodeId() {
    return this.hop.nodeId;
  }
  get version() {
    return this.hop.version;
  }
  get from() {
    return this.hop.from;
  }
  get to() {
    return this.hop.to;
  }
  async openSession(open: SessionOpen) {
    let t;
    try {
      t = await this.transport();
    } catch (e) {
      if (e instanceof StaleEpochError) throw e;
      // This agent out of descriptors is its own failure, not the stage's.
      const local = localExhaustion(this.nodeId, e);
      if (local) throw local;
      // Unreachable is a stage failure: the head re-places its layers.
      throw new StageLinkError((e as Error).message, this.nodeId);
    }
    return new RemoteStageLink(this.nodeId, this.from, this.to, t.transport, {
      dataEndpoint: t.dataEndpoint,
      lost: t.lost,
      sender: t.sender,
    }).openSession(open);
  }
  async openReplies(sessionId: string) {
    const t = await this.transport().catch(() => undefined);
    if (!t?.dataEndpoint) return undefined;
    return await new RemoteStageLink(this.nodeId, this.from, this.to, t.transport, {
      dataEndpoint: t.dataEndpoint,
      lost: t.lost,
    }).openReplies(sessionId);
  }
}
