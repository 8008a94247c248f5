/**
 * FetchChunks over plain TCP: the chunk data plane of a cluster without TLS.
 *
 * Why: served over HTTP/2, every 16 KiB DATA frame is a fresh allocation inside the runtime's
 * HTTP/2 layer, and glibc keeps what those leave behind. A source serving one standby the 8B
 * model's 1.36 GB grew its anonymous memory by 100–290 MB and sent at 230–290 MB/s; the same
 * bytes written to TCP sockets from the same two buffers per stream grew it by 4 MB (README,
 * "Model distribution"). Under mTLS the chunks stay on gRPC: `Deno.listenTls` cannot require a
 * client certificate.
 *
 * One request per connection. The fetcher sends a 4-byte big-endian length and a
 * FetchChunksRequest. The source answers with gRPC envelopes (flag byte, 4-byte length, body):
 * a FetchChunksResponse per chunk — the very bytes the lean gRPC path sends — then one trailer
 * envelope (flag 0x80) whose body is JSON `{"code": <Connect code, 0 = ok>, "message": "…"}`.
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
import { splitHostPort } from "../gossip/transport.ts";
import { grpcEnvelope, toConnectError } from "../rpc/mod.ts";

/** Largest request a chunk server reads: far above any batch a fetcher asks for. */
export const MAX_CHUNK_REQUEST_BYTES = 1 << 20;
/**
 * Connections a chunk server holds at once; more are closed at once (a fetcher opens one per
 * stream, 8 by default, so this is several fetchers' worth).
 */
export const MAX_CHUNK_CONNECTIONS = 64;
/** Envelope flag of the trailer that ends a response. */
const TRAILER = 0x80;

/** Errors made by {@linkcode chunkServerUnavailable}. */
const unavailable = new WeakSet<ConnectError>();

/**
 * The chunk server could not be reached or its connection failed (not a clean end, not an error
 * it answered): Unavailable, and marked so that a fetcher getting it before any chunk falls back
 * to gRPC ({@linkcode isChunkServerUnavailable}). Not a subclass: ConnectError's `instanceof`
 * goes by its name, which a subclass would change.
 */
function chunkServerUnavailable(endpoint: string, cause: unknown): ConnectError {
  const e = new ConnectError(
    `chunk server ${endpoint}: ${(cause as Error)?.message ?? cause}`,
    Code.Unavailable,
  );
  unavailable.add(e);
  return e;
}

/** Whether `e` says the chunk server could not be reached (see chunkServerUnavailable). */
export function isChunkServerUnavailable(e: unknown): boolean {
  return e instanceof ConnectError && unavailable.has(e);
}

/** What a chunk server serves: the manager's FetchChunks, framed chunks included. */
export type ServeChunks = (
  req: { sha256: string; chunks: { segment: number; chunk: number }[] },
  signal: AbortSignal,
) => AsyncIterable<{ envelope(): Uint8Array }>;

/** A running chunk server. */
export interface ChunkServer {
  /** The port it listens on. */
  readonly port: number;
  /** Stop accepting, end the connections being served. */
  close(): Promise<void>;
}

/** Listen on `host` (a free port unless `port`) and serve FetchChunks requests over TCP. */
export function startChunkServer(opts: {
  host: string;
  port?: number;
  fetchChunks: ServeChunks;
  /** How long a connection may take to send its request; default 10 s. */
  requestTimeoutMs?: number;
  log?: (msg: string) => void;
}): Promise<ChunkServer> {
  const listener = Deno.listen({ hostname: opts.host, port: opts.port ?? 0, transport: "tcp" });
  const open = new Set<Deno.Conn>();
  const abort = new AbortController();
  const serving = (async () => {
    for await (const conn of listener) {
      if (open.size >= MAX_CHUNK_CONNECTIONS) {
        closeQuietly(conn);
        continue;
      }
      open.add(conn);
      serveConnection(conn, opts.fetchChunks, abort.signal, opts.requestTimeoutMs ?? 10_000)
        .catch((e) => opts.log?.(`chunk connection failed: ${(e as Error).message}`))
        .finally(() => {
          open.delete(conn);
          closeQuietly(conn);
        });
    }
  })().catch(() => {/* the listener closed */});
  return Promise.resolve({
    port: (listener.addr as Deno.NetAddr).port,
    async close() {
      abort.abort();
      closeQuietly(listener);
      for (const c of open) closeQuietly(c);
      await serving;
    },
  });
}

/** Read one request from `conn`, stream its chunks, end with a trailer. */
async function serveConnection(
  conn: Deno.Conn,
  fetchChunks: ServeChunks,
  closing: AbortSignal,
  requestTimeoutMs: number,
): Promise<void> {
  const slow = new AbortController();
  const timer = setTimeout(() => slow.abort(), requestTimeoutMs);
  const signal = AbortSignal.any([closing, slow.signal]);
  let req: FetchChunksRequest;
  try {
    const head = await readExact(conn, 4, signal);
    const n = new DataView(head.buffer).getUint32(0);
    if (n > MAX_CHUNK_REQUEST_BYTES) {
      throw new ConnectError(
        `a chunk request of ${n} bytes exceeds ${MAX_CHUNK_REQUEST_BYTES}`,
        Code.ResourceExhausted,
      );
    }
    req = fromBinary(FetchChunksRequestSchema, await readExact(conn, n, signal));
    clearTimeout(timer);
  } catch (e) {
    clearTimeout(timer);
    await writeTrailer(
      conn,
      e instanceof ConnectError ? e : new ConnectError(
        `malformed chunk request: ${(e as Error).message}`,
        Code.InvalidArgument,
      ),
    ).catch(() => {});
    return;
  }
  // The fetcher going away ends the stream: a failed write throws out of the loop below, and
  // the manager's generator is closed (its buffers and its serve slot released).
  try {
    for await (const c of fetchChunks(req, closing)) await writeAll(conn, c.envelope());
  } catch (e) {
    if (e instanceof Deno.errors.BrokenPipe || e instanceof Deno.errors.ConnectionReset) return;
    await writeTrailer(conn, toConnectError(e)).catch(() => {});
    return;
  }
  await writeTrailer(conn);
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
  let conn: Deno.Conn;
  try {
    const { host, port } = splitHostPort(endpoint);
    conn = await Deno.connect({ hostname: host, port, transport: "tcp" });
  } catch (e) {
    throw chunkServerUnavailable(endpoint, e);
  }
  const cut = () => closeQuietly(conn);
  signal?.addEventListener("abort", cut, { once: true });
  try {
    const body = toBinary(FetchChunksRequestSchema, create(FetchChunksRequestSchema, req));
    const out = new Uint8Array(4 + body.length);
    new DataView(out.buffer).setUint32(0, body.length);
    out.set(body, 4);
    await writeAll(conn, out);
    const header = new Uint8Array(5);
    for (;;) {
      if (!(await readInto(conn, header, true))) {
        throw new ConnectError(
          `chunk server ${endpoint} closed the stream early`,
          Code.Unavailable,
        );
      }
      const flags = header[0];
      const n = new DataView(header.buffer).getUint32(1);
      if (n > maxMessageBytes) {
        throw new ConnectError(
          `chunk server ${endpoint} sent a message of ${n} bytes (limit ${maxMessageBytes})`,
          Code.ResourceExhausted,
        );
      }
      // Each message in a buffer of its own: the fetcher frees it once the chunk is written.
      const msg = new Uint8Array(n);
      await readInto(conn, msg, false);
      if (flags & TRAILER) {
        const t = parseTrailer(msg);
        if (t.code !== 0) throw new ConnectError(t.message, t.code as Code);
        return;
      }
      yield fromBinary(FetchChunksResponseSchema, msg);
    }
  } catch (e) {
    if (signal?.aborted) throw signal.reason ?? e;
    if (e instanceof ConnectError) throw e;
    throw chunkServerUnavailable(endpoint, e);
  } finally {
    signal?.removeEventListener("abort", cut);
    cut();
  }
}

/** The trailer's status: code 0 is success, else a Connect code. */
function parseTrailer(body: Uint8Array): { code: number; message: string } {
  try {
    const t = JSON.parse(new TextDecoder().decode(body));
    const code = Number(t.code);
    if (Number.isInteger(code) && (code === 0 || Code[code] !== undefined)) {
      return { code, message: String(t.message ?? "").slice(0, 1024) };
    }
  } catch { /* below */ }
  return { code: Code.Internal, message: "malformed trailer from a chunk server" };
}

async function writeTrailer(conn: Deno.Conn, err?: ConnectError): Promise<void> {
  const body = new TextEncoder().encode(
    JSON.stringify(err ? { code: err.code, message: err.rawMessage.slice(0, 1024) } : { code: 0 }),
  );
  await writeAll(conn, grpcEnvelope(body, TRAILER));
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let done = 0; done < bytes.length;) done += await conn.write(bytes.subarray(done));
}

/** Fill `into`; false at a clean end of stream before its first byte (when `eofOk`). */
async function readInto(conn: Deno.Conn, into: Uint8Array, eofOk: boolean): Promise<boolean> {
  let got = 0;
  while (got < into.length) {
    const n = await conn.read(into.subarray(got));
    if (n === null) {
      if (got === 0 && eofOk) return false;
      throw new ConnectError("the stream ended inside a message", Code.DataLoss);
    }
    got += n;
  }
  return true;
}

/** `n` bytes from `conn`, or a failure when it ends first or `signal` fires. */
async function readExact(conn: Deno.Conn, n: number, signal: AbortSignal): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  const cut = () => closeQuietly(conn);
  signal.addEventListener("abort", cut, { once: true });
  try {
    await readInto(conn, out, false);
    return out;
  } finally {
    signal.removeEventListener("abort", cut);
  }
}

function closeQuietly(c: { close(): void }): void {
  try {
    c.close();
  } catch { /* already closed */ }
}
