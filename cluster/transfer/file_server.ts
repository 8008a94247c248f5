/**
 * A TransferService outside the cluster that serves GGUF files from this machine: what
 * `llmctl models deploy --from-here <file>` runs, so agents fetch a file only llmctl's machine
 * holds. It answers GetManifest (by path) and FetchChunks; it is no gossip member, hosts no
 * layers and fetches nothing. Plaintext only: agents with mTLS cannot reach it (copy the file
 * to one agent and deploy with `--source <node>` instead).
 *
 * @example
 * ```ts
 * const server = await startFileServer({ host: "127.0.0.1" });
 * // DeployRequest { path, sourceEndpoint: server.endpoint } …
 * await server.close();
 * ```
 *
 * @module
 */
import { tmpdir } from "node:os";
import type { ServiceImpl } from "@connectrpc/connect";
import { RAW_SERVER_STREAMS, RpcFailure, type RpcServer, startRpcServer } from "../rpc/mod.ts";
import { TransferService } from "../../proto/mod.ts";
import { joinHostPort } from "../gossip/transport.ts";
import { type ChunkServer, startChunkServer } from "./data_plane.ts";
import { detachedHost } from "./host.ts";
import { TransferManager } from "./manager.ts";
import { transferService } from "./service.ts";

/** A running file server. */
export interface FileServer {
  /** host:port agents reach it at. */
  readonly endpoint: string;
  /**
   * Stop reading files. The listener and its connections end with the process: closing HTTP/2
   * sessions gracefully (GOAWAY) while agents hold them trips an nghttp2 assertion in Deno
   * (`find_stream_on_goaway_func`) and aborts the agent; a process exit only resets them.
   */
  close(): Promise<void>;
}

/**
 * Serve the one file at `path` (absolute) over TransferService on `host` (a free port). Only
 * GetManifest of that path and FetchChunks of its bytes are answered: the server may listen on
 * an address others reach, and it served any GGUF on the machine to whoever asked for its path
 * (and answered Deploy, Prepare and Undeploy as if it were an agent).
 */
export async function startFileServer(opts: { host: string; path: string }): Promise<FileServer> {
  const shared = await Deno.realPath(opts.path);
  let chunks: ChunkServer | undefined;
  // Plaintext anyway: chunks go over the TCP data plane (data_plane.ts), manifests over gRPC.
  const manager = new TransferManager(detachedHost("llmctl"), {
    cacheDir: tmpdir(),
    rateLimit: 0,
    dataEndpoint: () => chunks && joinHostPort(opts.host, chunks.port),
  });
  try {
    chunks = await startChunkServer({
      host: opts.host,
      fetchChunks: (req, signal) => manager.fetchChunks(req, signal),
    });
    const server: RpcServer = await startRpcServer({
      host: opts.host,
      port: 0,
      // The user named the address to serve on; the files are what they chose to share.
      insecureBindAll: true,
      routes: (r) => r.service(TransferService, oneFile(transferService(manager), shared)),
    });
    return {
      endpoint: joinHostPort(opts.host, server.port),
      async close() {
        await chunks?.close();
        manager.close();
      },
    };
  } catch (e) {
    await chunks?.close();
    manager.close();
    throw e;
  }
}

/** The handlers of `all` that serve the file at `path` and nothing else (the rest: Unimplemented). */
function oneFile(
  all: ServiceImpl<typeof TransferService>,
  path: string,
): Partial<ServiceImpl<typeof TransferService>> {
  return {
    async getManifest(req, ctx) {
      if (req.path && await Deno.realPath(req.path).catch(() => undefined) !== path) {
        throw new RpcFailure(
          "permission_denied",
          `this file server shares only ${path}, not ${req.path.slice(0, 256)}`,
        );
      }
      // Asked by model id (fetchers looking for sources): the one file's manifest, whose sha256
      // the asker compares with the one it fetches.
      return await all.getManifest({ ...req, path, model: "" }, ctx);
    },
    // Only chunks of a manifest answered above exist to be fetched.
    fetchChunks: all.fetchChunks,
    ...{ [RAW_SERVER_STREAMS]: (all as Record<symbol, unknown>)[RAW_SERVER_STREAMS] },
  };
}
