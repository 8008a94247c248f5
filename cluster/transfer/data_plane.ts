/**
 * FetchChunks over the TCP data plane (cluster/rpc/tcp_plane.ts): model chunks of a cluster
 * without TLS.
 *
 * Why: served over HTTP/2, every 16 KiB DATA frame is a fresh allocation inside the runtime's
 * HTTP/2 layer, and glibc keeps what those leave behind. A source serving one standby the 8B
 * model's 1.36 GB grew its anonymous memory by 100–290 MB and sent at 230–290 MB/s; the same
 * bytes written to TCP sockets from the same two buffers per stream grew it by 4 MB (README,
 * "Model distribution"). Under mTLS the chunks stay on gRPC: `Deno.listenTls` cannot require a
 * client certificate.
 *
 * One request per connection, after the preamble `DLC1`. The fetcher sends a 4-byte big-endian
 * length and a FetchChunksRequest. The source answers with gRPC envelopes: a
 * FetchChunksResponse per chunk — the very bytes the lean gRPC path sends — then the plane's
 * trailer.
 *
 * @example
 * ```ts
 * const server = await startChunkServer({ host: "127.0.0.1", fetchChunks: (r, s) => manager.fetchChunks(r, s) });
 * for await (const m of tcpChunkClient(`127.0.0.1:${server.port}`).fetchChunks(req)) use(m.data);
 * ```
 * @module
 */
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type FetchChunksRequest,
  FetchChunksRequestSchema,
  type FetchChunksResponse,
  FetchChunksResponseSchema,
} from "../../proto/mod.ts";
import {
  closeQuietly,
  connectTcpPlane,
  FrameReader,
  isBrokenConnection,
  isPlaneUnavailable,
  parseTrailer,
  type PlaneProtocol,
  planeUnavailable,
  readExact,
  startTcpPlane,
  type TcpPlane,
  toConnectError,
  TRAILER_FLAG,
  trailerEnvelope,
  writeAll,
} from "../rpc/mod.ts";

/** The chunk protocol's preamble on the data plane. */
export const CHUNKS_PREAMBLE = "DLC1";
/** Largest request a chunk server reads: far above any batch a fetcher asks for. */
export const MAX_CHUNK_REQUEST_BYTES = 1 << 20;
/**
 * Chunk connections a server holds at once; more are refused at once (a fetcher opens one per
 * stream, 8 by default, so this is several fetchers' worth).
 */
export const MAX_CHUNK_CONNECTIONS = 64;

/** Whether `e` says the chunk server could not be reached (the fetcher falls back to gRPC). */
export const isChunkServerUnavailable: (e: unknown) => boolean = isPlaneUnavailable;

/** What a chunk server serves: the manager's FetchChunks, framed chunks included. */
export type ServeChunks = (
  req: { sha256: string; chunks: { segment: number; chunk: number }[] },
  signal: AbortSignal,
) => AsyncIterable<{ envelope(): Uint8Array }>;

/** A running chunk server. */
export type ChunkServer = TcpPlane;

/** The chunk protocol of a data plane, serving `fetchChunks`. */
export function chunkProtocol(
  fetchChunks: ServeChunks,
  requestTimeoutMs = 10_000,
): PlaneProtocol {
  return {
    maxConnections: MAX_CHUNK_CONNECTIONS,
    serve: (conn, closing) => serveChunks(conn, fetchChunks, closing, requestTimeoutMs),
  };
}

/** Listen on `host` (a free port unless `port`): a data plane serving only chunks. */
export function startChunkServer(opts: {
  host: string;
  port?: number;
  fetchChunks: ServeChunks;
  /** How long a connection may take to send its request; default 10 s. */
  requestTimeoutMs?: number;
  log?: (msg: string) => void;
}): Promise<ChunkServer> {
  return startTcpPlane({
    host: opts.host,
    port: opts.port,
    protocols: { [CHUNKS_PREAMBLE]: chunkProtocol(opts.fetchChunks, opts.requestTimeoutMs) },
    preambleTimeoutMs: opts.requestTimeoutMs,
    log: opts.log,
  });
}

/** Read one request from `conn`, stream its chunks, end with a trailer. */
async function serveChunks(
  conn: Deno.Conn,
  fetchChunks: ServeChunks,
  closing: AbortSignal,
  requestTimeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + requestTimeoutMs;
  let req: FetchChunksRequest;
  try {
    const head = await readExact(conn, 4, requestTimeoutMs, closing);
    const n = new DataView(head.buffer).getUint32(0);
    if (n > MAX_CHUNK_REQUEST_BYTES) {
      throw new ConnectError(
        `a chunk request of ${n} bytes exceeds ${MAX_CHUNK_REQUEST_BYTES}`,
        Code.ResourceExhausted,
      );
    }
    const body = await readExact(conn, n, Math.max(0, deadline - Date.now()), closing);
    req = fromBinary(FetchChunksRequestSchema, body);
  } catch (e) {
    await writeAll(
      conn,
      trailerEnvelope(
        e instanceof ConnectError ? e : new ConnectError(
          `malformed chunk request: ${(e as Error).message}`,
          Code.InvalidArgument,
        ),
      ),
    ).catch(() => {});
    return;
  }
  // The fetcher going away ends the stream: a failed write throws out of the loop below, and
  // the manager's generator is closed (its buffers and its serve slot released).
  try {
    for await (const c of fetchChunks(req, closing)) await writeAll(conn, c.envelope());
  } catch (e) {
    if (isBrokenConnection(e)) return;
    await writeAll(conn, trailerEnvelope(toConnectError(e))).catch(() => {});
    return;
  }
  await writeAll(conn, trailerEnvelope()).catch(() => {});
}

/** A FetchChunks client of the chunk server at `endpoint` (host:port). */
export function tcpChunkClient(endpoint: string, maxMessageBytes = 64 << 20) {
  return {
    fetchChunks(
      req: MessageInitShape<typeof FetchChunksRequestSchema>,
      options: { signal?: AbortSignal } = {},
    ): AsyncIterable<FetchChunksResponse> {
      return fetchOverTcp(endpoint, req, options.signal, maxMessageBytes);
    },
  };
}

async function* fetchOverTcp(
  endpoint: string,
  req: MessageInitShape<typeof FetchChunksRequestSchema>,
  signal: AbortSignal | undefined,
  maxMessageBytes: number,
): AsyncGenerator<FetchChunksResponse> {
  const conn = await connectTcpPlane(endpoint, CHUNKS_PREAMBLE);
  const cut = () => closeQuietly(conn);
  signal?.addEventListener("abort", cut, { once: true });
  try {
    const body = toBinary(FetchChunksRequestSchema, create(FetchChunksRequestSchema, req));
    const out = new Uint8Array(4 + body.length);
    new DataView(out.buffer).setUint32(0, body.length);
    out.set(body, 4);
    await writeAll(conn, out);
    // Each message in a buffer of its own: the fetcher frees it once the chunk is written.
    const reader = new FrameReader(conn, maxMessageBytes);
    for (;;) {
      const m = await reader.next();
      if (!m) {
        throw new ConnectError(
          `chunk server ${endpoint} closed the stream early`,
          Code.Unavailable,
        );
      }
      if (m.flags & TRAILER_FLAG) {
        const status = parseTrailer(m.body, `chunk server ${endpoint}`);
        if (status) throw status;
        return;
      }
      yield fromBinary(FetchChunksResponseSchema, m.body);
    }
  } catch (e) {
    if (signal?.aborted) throw signal.reason ?? e;
    if (e instanceof ConnectError) throw e;
    throw planeUnavailable(endpoint, e);
  } finally {
    signal?.removeEventListener("abort", cut);
    cut();
  }
}
