/**
 * The transfer side's view of other agents: one uncompressed RPC connection per endpoint (so
 * activation streams never queue behind chunks), which live members hold chunks of a model
 * (asked at most every 2 s per peer), and each target's progress during a deploy.
 *
 * @module
 */
import { type Client, createClient } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import {
  type GetManifestResponse,
  type TransferManifest,
  type TransferProgress,
  TransferProgressSchema,
  TransferService,
  TransferState,
} from "../../proto/mod.ts";
import { createRpcTransport, RpcFailure, type RpcTransport } from "../rpc/mod.ts";
import type { TlsFiles } from "../tls/mod.ts";
import type { ChunkPeer } from "./fetch.ts";
import type { TransferHost } from "./host.ts";
import { isChunkServerUnavailable, tcpChunkClient } from "./data_plane.ts";

/**
 * HTTP/2 receive windows of a transfer connection. node's 64 KiB default made a source wait for
 * a WINDOW_UPDATE every 64 KiB of each 1 MiB chunk (16 round trips through both event loops per
 * chunk); 2 MiB per stream lets a chunk and the next one travel while the fetcher writes the
 * previous, and bounds what a fetcher buffers to 2 MiB × its streams (16 MiB in all).
 */
export const TRANSFER_WINDOW = { stream: 2 << 20, connection: 16 << 20 };

/** RPC clients of the other agents' TransferService, and what they hold. */
export class TransferPeers {
  readonly #transports = new Map<string, RpcTransport>();
  readonly #peerCache = new Map<string, { at: number; peer?: ChunkPeer }>();

  /**
   * @param host the agent (members and their endpoints)
   * @param tls the agent's TLS files, for mTLS to its peers
   * @param open verify a peer's manifest answer (signature, CA)
   */
  constructor(
    readonly host: TransferHost,
    readonly tls: TlsFiles | undefined,
    readonly open: (answer: GetManifestResponse) => Promise<{ manifest: TransferManifest }>,
    /** The name every peer's certificate carries where agents share one; else its node id. */
    readonly peerName?: string,
  ) {}

  /** A client of live member `nodeId`. */
  async client(nodeId: string): Promise<Client<typeof TransferService>> {
    const m = this.host.members().find((x) => x.id === nodeId);
    if (!m) throw new RpcFailure("not_found", `no live member ${nodeId}`);
    return await this.clientAt(m.endpoint, m.id);
  }

  /**
   * A client of the agent at `endpoint` (host:port); under mTLS its certificate may name
   * `nodeId` instead of the address.
   */
  async clientAt(endpoint: string, nodeId?: string): Promise<Client<typeof TransferService>> {
    const key = `${endpoint}\0${nodeId ?? ""}`;
    let t = this.#transports.get(key);
    if (!t) {
      // Its own connection (activation streams never queue behind chunks), uncompressed.
      t = await createRpcTransport(endpoint, {
        tls: this.tls && { ...this.tls, serverName: this.peerName ?? nodeId },
        gzip: false,
        window: TRANSFER_WINDOW,
      });
      this.#transports.set(key, t);
    }
    return createClient(TransferService, t);
  }

  /**
   * Peers holding (part of) `manifest`'s model: members that offer it in gossip or computed its
   * manifest, plus an `external` source (llmctl --from-here, host:port).
   */
  async holding(manifest: TransferManifest, external?: string): Promise<ChunkPeer[]> {
    const ms: { id: string; endpoint: string }[] = this.host.members().filter((m) =>
      m.id !== this.host.nodeId && m.status === "alive" &&
      (m.model === manifest.modelId || m.id === manifest.sourceNodeId)
    );
    if (external) ms.push({ id: `external@${external}`, endpoint: external });
    const now = Date.now();
    const found = await Promise.all(ms.map(async (m) => {
      const key = `${m.id}@${m.endpoint}/${manifest.sha256}`;
      const hit = this.#peerCache.get(key);
      if (hit && now - hit.at < 2000) return hit.peer;
      let peer: ChunkPeer | undefined;
      try {
        const member = m.id === `external@${external}` ? undefined : m.id;
        const client = await this.clientAt(m.endpoint, member);
        const a = await client.getManifest({ model: manifest.modelId }, { timeoutMs: 3000 });
        const { manifest: theirs } = await this.open(a);
        if (theirs.sha256 === manifest.sha256) {
          const all = a.availableSegments.length === manifest.segments.length;
          peer = {
            id: m.id,
            client: a.dataEndpoint && !this.tls ? viaDataPlane(client, a.dataEndpoint) : client,
            segments: all ? "all" : new Set(a.availableSegments),
          };
        }
      } catch { /* not a source (now) */ }
      this.#peerCache.set(key, { at: now, peer });
      return peer;
    }));
    return found.filter((p): p is ChunkPeer => p !== undefined);
  }

  /** `nodeId`'s progress on `manifest` (`local` answers for this node); PENDING if unknown. */
  async progress(
    nodeId: string,
    manifest: TransferManifest,
    signal: AbortSignal,
    local: () => TransferProgress[],
  ): Promise<TransferProgress> {
    try {
      const list = nodeId === this.host.nodeId
        ? local()
        : (await (await this.client(nodeId)).transferStatus({}, { signal, timeoutMs: 3000 }))
          .models;
      return list.find((p) => p.sha256 === manifest.sha256 || p.model === manifest.modelId) ??
        create(TransferProgressSchema, {
          nodeId,
          model: manifest.modelId,
          state: TransferState.PENDING,
        });
    } catch (e) {
      return create(TransferProgressSchema, {
        nodeId,
        model: manifest.modelId,
        state: TransferState.PENDING,
        detail: `unreachable: ${(e as Error).message}`,
      });
    }
  }

  /** Close every connection. */
  close(): void {
    for (const t of this.#transports.values()) t.close();
  }
}

/**
 * `client` with FetchChunks over the peer's chunk data plane (data_plane.ts). A data plane this
 * node cannot reach (a firewall that opens only the RPC port) is left for the client's gRPC
 * for the rest of this peer entry's life.
 */
function viaDataPlane(
  client: Client<typeof TransferService>,
  endpoint: string,
): Client<typeof TransferService> {
  const tcp = tcpChunkClient(endpoint);
  let reachable = true;
  return Object.assign(Object.create(client), {
    fetchChunks: async function* (
      req: Parameters<Client<typeof TransferService>["fetchChunks"]>[0],
      options?: { signal?: AbortSignal },
    ) {
      if (reachable) {
        let first = true;
        try {
          for await (const m of tcp.fetchChunks(req, options)) {
            first = false;
            yield m;
          }
          return;
        } catch (e) {
          // A failure mid-stream is the fetcher's to retry, as over gRPC. Before any chunk, this
          // call goes over gRPC (a busy plane, or an agent of an older version that speaks
          // another plane protocol, says so only in its error); unreachable: from now on too.
          if (!first || options?.signal?.aborted) throw e;
          if (isChunkServerUnavailable(e)) reachable = false;
        }
      }
      yield* client.fetchChunks(req, options);
    },
  }) as Client<typeof TransferService>;
}
