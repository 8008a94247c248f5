/**
 * Model distribution: a source describes a GGUF file once (a manifest with sha256 per chunk and
 * per tensor, signed with its TLS identity when TLS is on), agents stream exactly the header and
 * their layers' tensors from any peer that has them into a content-addressed, resumable cache,
 * and load their stage from it through a `ByteSource` (`LlamaStage.load` unchanged).
 *
 * @example
 * ```ts
 * import { TransferManager, transferService } from "./mod.ts";
 * const transfer = new TransferManager(host, { cacheDir: "/tmp/cache", rateLimit: 0 });
 * router.service(TransferService, transferService(transfer));
 * ```
 *
 * @module
 */
export { defaultCacheDir, ModelCache } from "./cache.ts";
export { CacheSource, type VerifiedSegments } from "./cache_source.ts";
export {
  type ChunkPeer,
  FetchError,
  type FetchOptions,
  fetchSegments,
  type FetchStats,
} from "./fetch.ts";
export {
  chunkCount,
  computeManifest,
  DEFAULT_CHUNK_SIZE,
  HEADER_SEGMENT,
  hex,
  ManifestError,
  type ManifestOptions,
  openManifest,
  segmentsFor,
  sha256,
  signedManifest,
  type SigningIdentity,
  UNSIGNED,
} from "./manifest.ts";
export { corruptionHook, TransferManager } from "./manager.ts";
export { detachedHost, fileMtime, type TransferHost, type TransferManagerOptions } from "./host.ts";
export { RateLimiter, Semaphore, sleep } from "./rate.ts";
export { transferService } from "./service.ts";
export {
  collectGarbage,
  discardReceived,
  MemoryReleaser,
  readAhead,
  releaseFreedMemory,
} from "./memory.ts";
export { TRANSFER_WINDOW } from "./peers.ts";
export {
  chunkProtocol,
  CHUNKS_PREAMBLE,
  type ChunkServer,
  MAX_CHUNK_REQUEST_BYTES,
  startChunkServer,
  tcpChunkClient,
} from "./data_plane.ts";
export { type FileServer, startFileServer } from "./file_server.ts";
