/**
 * What the transfer manager needs from its agent, and its options.
 *
 * @module
 */
import type { Placement, TransferProgress } from "../../proto/mod.ts";
import type { GGUFFile } from "../../model/gguf/mod.ts";
import type { TlsFiles } from "../tls/mod.ts";

/** What the transfer manager needs from its agent. */
export interface TransferHost {
  /** This node's id. */
  readonly nodeId: string;
  /** Live members (this one included) with their RPC endpoint and offered model id. */
  members(): { id: string; endpoint: string; model: string; status: string }[];
  /**
   * The model this agent serves now (id), the file it was opened from if local (and its
   * fileMtime then), and the sha256 of its bytes where a deploy told it.
   */
  served(): { id: string; path?: string; sha256?: string; mtimeMs?: number } | undefined;
  /** The layers this agent hosts now. */
  hostedRange(): { from: number; to: number } | undefined;
  /** Plan the model's placement over these nodes (throws with a message when it cannot). */
  plan(file: GGUFFile, modelId: string, nodes: string[]): Placement;
  /**
   * Serve `file` as model `id` (offer it in gossip; placement does the rest); `sha256` is its
   * bytes' digest from the deploy's manifest.
   */
  adopt(id: string, file: GGUFFile, path?: string, sha256?: string): Promise<void>;
  /**
   * A fetch of layers `range` of model `model` (`file`) for this node's stage has started: the
   * agent may fault that memory in and load the layers as they arrive (a standby does).
   */
  beforeFetch?(model: string, file: GGUFFile, range: { from: number; to: number }): void;
  /** Stop serving model `id`; false when it was not served. */
  unserve(id: string): Promise<boolean>;
  /** Publish progress as a cluster event. */
  publish(progress: TransferProgress): void;
  /** Diagnostics. */
  log(level: "debug" | "info" | "warn" | "error", msg: string, f?: Record<string, unknown>): void;
}

/**
 * A host with no agent behind it (`llmctl`'s file server, tests): no members, serves and plans
 * nothing, publishes and logs nowhere; `over` replaces any of that.
 */
export function detachedHost(nodeId: string, over: Partial<TransferHost> = {}): TransferHost {
  return {
    nodeId,
    members: () => [],
    served: () => undefined,
    hostedRange: () => undefined,
    plan: () => {
      throw new Error(`${nodeId} plans no placement`);
    },
    adopt: () => Promise.reject(new Error(`${nodeId} serves no layers`)),
    unserve: () => Promise.resolve(false),
    publish: () => {},
    log: () => {},
    ...over,
  };
}

/** Options of {@linkcode TransferManager}. */
export interface TransferManagerOptions {
  /** Cache root (`--cache-dir`). */
  cacheDir: string;
  /** Default fetch rate limit, bytes/s; 0 = none (`--transfer-rate-limit`). */
  rateLimit: number;
  /** The agent's TLS files: manifests are signed with its key and checked with its CA. */
  tls?: TlsFiles;
  /** The name every peer's certificate carries where agents share one (`--tls-peer-name`). */
  tlsPeerName?: string;
  /** Chunk size for manifests this node computes; default 1 MiB. */
  chunkSize?: number;
  /** Concurrent fetch streams per model; default 8. */
  fetchConcurrency?: number;
  /**
   * Concurrent chunk streams this node serves; default 8. With 2 MiB windows 8 streams carry as
   * much as 16 did, and a source serving 3 fetchers peaked 80 MB lower (each stream holds its
   * chunks, their encodings and a window in flight).
   */
  serveConcurrency?: number;
  /** Test hook: `DLLM_TEST_CORRUPT_CHUNKS` ("0.2" = probability, or "1:0,3:2" = segment:chunk). */
  corruptChunks?: string;
  /**
   * host:port of this node's chunk data plane (data_plane.ts), told to fetchers in GetManifest
   * answers; undefined: none (they fetch over gRPC).
   */
  dataEndpoint?: () => string | undefined;
}

/**
 * A file's mtime in ms (0 when it has none; undefined when it cannot be read): what an agent
 * reports in served() and what the transfer manager compares it with.
 */
export async function fileMtime(path: string): Promise<number | undefined> {
  try {
    return (await Deno.stat(path)).mtime?.getTime() ?? 0;
  } catch {
    return undefined;
  }
}
