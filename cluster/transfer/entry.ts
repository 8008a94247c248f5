/**
 * One model this node knows (a source file, a verified cache, or both, and what is being
 * fetched for it) and its progress as TransferStatus reports it.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import {
  type GetManifestResponse,
  type TransferManifest,
  type TransferProgress,
  TransferProgressSchema,
  TransferState,
} from "../../proto/mod.ts";
import type { GGUFFile } from "../../model/gguf/mod.ts";
import type { ModelCache } from "./cache.ts";
import type { FetchStats } from "./fetch.ts";
import type { TransferHost } from "./host.ts";
import type { RateLimiter } from "./rate.ts";

/** One model this node knows: a source file, a cache, or both. */
export interface Entry {
  manifest: TransferManifest;
  answer: GetManifestResponse;
  signature: string;
  path?: string;
  cache?: ModelCache;
  file?: GGUFFile;
  stats: FetchStats;
  state: TransferState;
  detail: string;
  range?: { from: number; to: number };
  needed: number[];
  waitFor?: Set<string>;
  /** A source outside the cluster (llmctl --from-here), host:port. */
  external?: string;
  limiter: RateLimiter;
  rate: number;
  lastBytes: number;
  lastAt: number;
  fetching?: Promise<void>;
  /**
   * Aborts the fetch a Prepare started (undeploy, or a Prepare of another model came since):
   * a superseded fetch must not finish by serving its model over the one wanted now.
   */
  prepared?: AbortController;
}

/** One entry's progress now, as TransferStatus and cluster events report it. */
export function entryProgress(host: TransferHost, e: Entry): TransferProgress {
  const served = host.served();
  const hosted = host.hostedRange();
  const loaded = served?.id === e.manifest.modelId && hosted !== undefined;
  const total = e.needed.reduce((s, i) => s + Number(e.manifest.segments[i].length), 0);
  let done = 0;
  if (e.cache) {
    for (const i of e.needed) {
      const len = Number(e.manifest.segments[i].length);
      done += e.cache.segmentDone(i)
        ? len
        : len - e.cache.missingChunks(i).reduce((s, c) => s + e.cache!.chunkLength(i, c), 0);
    }
  }
  const state = e.state === TransferState.FAILED || e.state === TransferState.FETCHING ||
      e.state === TransferState.PENDING
    ? e.state
    : loaded
    ? TransferState.LOADED
    : e.state;
  const range = loaded ? hosted : e.range;
  return create(TransferProgressSchema, {
    nodeId: host.nodeId,
    model: e.manifest.modelId,
    sha256: e.manifest.sha256,
    state,
    bytesDone: BigInt(e.path ? total : done),
    bytesTotal: BigInt(total),
    bytesPerSecond: e.rate,
    etaSeconds: e.rate > 0 && total > done ? (total - done) / e.rate : 0,
    bytesRefetched: BigInt(e.stats.bytesRefetched),
    corruptChunks: e.stats.corruptChunks,
    detail: e.detail || (e.path ? `source: ${e.path}` : "") ||
      (e.signature ? `manifest ${e.signature}` : ""),
    fromLayer: range?.from ?? 0,
    toLayer: range?.to ?? 0,
    cachedBytes: BigInt(e.cache?.cachedBytes ?? 0),
    bytesReceived: BigInt(e.stats.bytesReceived),
    served: served?.id === e.manifest.modelId,
  });
}
