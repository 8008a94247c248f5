/**
 * The data plane of a cluster without TLS: gRPC-framed messages over plain TCP, on one port per
 * agent, for the two paths whose bytes dominate — model chunks and stage-to-stage activations.
 *
 * Why not HTTP/2: in the runtime's HTTP/2 layer every 16 KiB DATA frame is a fresh native
 * allocation (a source serving the 8B model's 1.36 GB grew by 100–290 MB), and a 3 KB message
 * takes 0.35–0.45 ms per crossing on this machine against ~0.02 ms over a TCP socket (README,
 * "Model distribution" and "Pipeline"). Under mTLS both paths stay on gRPC: `Deno.listenTls`
 * cannot require a client certificate.
 *
 * A connection opens with a 4-byte preamble naming its protocol (e.g. `DLC1`: chunks, `DLF1`:
 * Forward); the rest is that protocol's. Messages travel in gRPC envelopes (flag byte, 4-byte
 * big-endian length, body); a stream ends with a trailer envelope (flag 0x80) whose body is
 * JSON `{"code": <Connect code, 0 = ok>, "message": "…"}`.
 *
 * @example
 * ```ts
 * const plane = await startTcpPlane({ host: "127.0.0.1", protocols: { DLF1: { serve } } });
 * const conn = await connectTcpPlane(`127.0.0.1:${plane.port}`, "DLF1");
 * ```
 * @module
 */
import { settleWithin } from "../deadline.ts";
import { Code, ConnectError } from "@connectrpc/connect";
import { splitHostPort } from "../gossip/transport.ts";
import { grpcEnvelope } from "./grpc_envelope.ts";
import { AcceptBackoff, acceptLoop, type Warn } from "../net/mod.ts";

/** Envelope flag of the trailer that ends a stream. */
export const TRAILER_FLAG = 0x80;

/** One protocol a plane serves. */
export interface PlaneProtocol {
  /** Serve one connection (its preamble already read); `closing` fires when the plane stops. */
  serve(conn: Deno.TcpConn, closing: AbortSignal): Promise<void>;
  /** Connections of this protocol served at once; more are closed at once (default 64). */
  maxConnections?: number;
}

/** A running data plane. */
export interface TcpPlane {
  /** The port it listens on. */
  readonly port: number;
  /** Stop accepting, end the connections being served. */
  close(): Promise<void>;
}

/** Options of {@linkcode startTcpPlane}. */
export interface TcpPlaneOptions {
  host: string;
  /** Port to listen on (default: any free port). */
  port?: number;
  /** What it serves, by 4-character preamble. */
  protocols: Record<string, PlaneProtocol>;
  /** How long a connection may take to send its preamble; default 10 s. */
  preambleTimeoutMs?: number;
  log?: (msg: string) => void;
  /** Where warnings go (accept failures); default a JSON line on stderr. */
  warn?: Warn;
}

/** Listen on `host` and serve each connection with the protocol its preamble names. */
export function startTcpPlane(opts: TcpPlaneOptions): Promise<TcpPlane> {
  for (const magic of Object.keys(opts.protocols)) {
    if (new TextEncoder().encode(magic).length !== 4) {
      throw new Error(`a data plane preamble is 4 bytes: "${magic}"`);
    }
  }
  const listener = Deno.listen({ hostname: opts.host, port: opts.port ?? 0, transport: "tcp" });
  const port = (listener.addr as Deno.NetAddr).port;
  const open = new Set<Deno.Conn>();
  // Every protocol's connections, and as many again still sending their preambles: beyond,
  // a connection is refused as it comes (a flood must not take every file descriptor).
  const limit = (p: PlaneProtocol) => p.maxConnections ?? 64;
  const caps = Object.values(opts.protocols).map(limit);
  const maxOpen = Math.max(64, 2 * caps.reduce((a, b) => a + b, 0));
  // Connections that have not sent their preamble yet, oldest first, at most `maxPending`: a
  // new one evicts the oldest, so sockets opened and left silent cannot keep out the stages'
  // own connections (which send their preamble at once) for the 10 s each may wait.
  const pending = new Set<Deno.Conn>();
  const maxPending = Math.max(16, Math.floor(maxOpen / 2));
  /** The served connections (close() waits for their handlers to finish). */
  const served = new Set<Promise<void>>();
  /** Answer a connection with `err` as its trailer, and end it. */
  const refuse = async (conn: Deno.Conn, err: ConnectError) => {
    await writeAll(conn, trailerEnvelope(err));
    await lingerClose(conn);
  };
  const counts = new Map<string, number>();
  const abort = new AbortController();
  const serveOne = async (conn: Deno.TcpConn) => {
    let head: Uint8Array;
    try {
      head = await readExact(conn, 4, opts.preambleTimeoutMs ?? 10_000, abort.signal);
    } finally {
      pending.delete(conn);
    }
    const magic = new TextDecoder().decode(head);
    const protocol = Object.hasOwn(opts.protocols, magic) ? opts.protocols[magic] : undefined;
    if (!protocol) {
      const why = `unknown data plane protocol ${JSON.stringify(magic)}`;
      return await refuse(conn, new ConnectError(why, Code.InvalidArgument));
    }
    const n = counts.get(magic) ?? 0;
    if (n >= limit(protocol)) {
      const why = `${PLANE_BUSY}: ${n} ${magic} connections; try again`;
      return await refuse(conn, new ConnectError(why, Code.ResourceExhausted));
    }
    counts.set(magic, n + 1);
    try {
      conn.setNoDelay(true);
      // A peer that vanishes without a FIN (a host lost) is found by keepalive probes.
      conn.setKeepAlive(true);
      await protocol.serve(conn, abort.signal);
    } finally {
      counts.set(magic, counts.get(magic)! - 1);
    }
  };
  /**
   * Tell `conn` the plane is busy (`PLANE_BUSY: why`), then close it: said, not just closed, so
   * a stage's link uses gRPC instead of failing the stage.
   */
  const busy = (conn: Deno.Conn, why: string) =>
    writeAll(
      conn,
      trailerEnvelope(new ConnectError(`${PLANE_BUSY}: ${why}`, Code.ResourceExhausted)),
      1000,
    )
      .catch(() => {})
      .finally(() => closeQuietly(conn));
  const onConn = (conn: Deno.TcpConn) => {
    if (pending.size >= maxPending) {
      // The oldest may be a stage's link whose preamble is on its way: cut silently, it blamed a
      // healthy stage ("closed without a status").
      const oldest = pending.values().next().value!;
      pending.delete(oldest);
      busy(oldest, `${pending.size + 1} connections sending no preamble`);
    } else if (open.size >= maxOpen) {
      busy(conn, `${open.size} connections open; try again`);
      return;
    }
    open.add(conn);
    pending.add(conn);
    const done = serveOne(conn)
      .catch((e) => opts.log?.(`data plane connection failed: ${(e as Error).message}`))
      .finally(() => {
        open.delete(conn);
        pending.delete(conn);
        closeQuietly(conn);
        served.delete(done);
      });
    served.add(done);
  };
  // Not `for await`: it ends on the first failed accept (EMFILE), and the port with it.
  const backoff = new AcceptBackoff(`data plane on ${opts.host}:${port}`, opts.warn);
  const serving = acceptLoop(listener, onConn, backoff, () => abort.signal.aborted);
  return Promise.resolve({
    port,
    async close() {
      abort.abort();
      closeQuietly(listener);
      for (const c of open) closeQuietly(c);
      await serving;
      // Their handlers' cleanup (a session's KV cache freed, its chain closed) ends before the
      // caller frees what they use; bounded, in case one is stuck elsewhere.
      await settleWithin(Promise.allSettled([...served]), 5000);
    },
  });
}

/** How a plane refusing a connection over its protocol's limit starts its message. */
export const PLANE_BUSY = "the data plane is at its connection limit";

/** Whether `e` is a plane's refusal of a connection over its limit (the caller may use gRPC). */
export function isPlaneBusy(e: unknown): boolean {
  return e instanceof ConnectError && e.code === Code.ResourceExhausted &&
    e.rawMessage.startsWith(PLANE_BUSY);
}

/** Errors made by {@linkcode planeUnavailable}. */
const unavailable = new WeakSet<ConnectError>();

/**
 * The plane at `endpoint` could not be reached, or its connection broke (not a clean end, not an
 * error it answered): Unavailable, marked so that a caller can fall back to gRPC
 * ({@linkcode isPlaneUnavailable}). Not a subclass: ConnectError's `instanceof` goes by its
 * name, which a subclass would change.
 */
export function planeUnavailable(endpoint: string, cause: unknown): ConnectError {
  const e = new ConnectError(
    `data plane ${endpoint}: ${(cause as Error)?.message ?? cause}`,
    Code.Unavailable,
    undefined,
    undefined,
    // Kept, so a local EMFILE behind it is told from the peer's failure (net/exhaustion.ts).
    cause,
  );
  unavailable.add(e);
  return e;
}

/** Whether `e` says the data plane could not be reached or its connection broke. */
export function isPlaneUnavailable(e: unknown): boolean {
  return e instanceof ConnectError && unavailable.has(e);
}

/** Connect to the plane at `endpoint` (host:port) and send `magic`; unreachable: Unavailable. */
export async function connectTcpPlane(
  endpoint: string,
  magic: string,
  timeoutMs = PLANE_CONNECT_TIMEOUT_MS,
): Promise<Deno.TcpConn> {
  const until = unreachableUntil.get(endpoint);
  if (until !== undefined && Date.now() < until) {
    throw planeUnavailable(
      endpoint,
      new Error(`a connection to it timed out less than ${UNREACHABLE_MS / 1000} s ago`),
    );
  }
  unreachableUntil.delete(endpoint);
  let conn: Deno.TcpConn;
  try {
    const { host, port } = splitHostPort(endpoint);
    conn = await Deno.connect({
      hostname: host,
      port,
      transport: "tcp",
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (e) {
    if ((e as Error)?.name !== "TimeoutError") throw planeUnavailable(endpoint, e);
    // A port that drops packets (a firewall that opens only the RPC port, an address that
    // routes nowhere) answers nothing: without a bound, the kernel's SYN retries held every
    // session opening for about two minutes. Remembered a while, so the next sessions go to
    // gRPC at once instead of each waiting again.
    if (unreachableUntil.size >= 1024) {
      unreachableUntil.delete(unreachableUntil.keys().next().value!);
    }
    unreachableUntil.set(endpoint, Date.now() + UNREACHABLE_MS);
    throw planeUnavailable(endpoint, new Error(`no connection within ${timeoutMs} ms`));
  }
  try {
    conn.setNoDelay(true);
    await writeAll(conn, new TextEncoder().encode(magic));
  } catch (e) {
    closeQuietly(conn);
    throw planeUnavailable(endpoint, e);
  }
  return conn;
}

/**
 * Whether the data plane at `endpoint` takes a connection now (closed at once, before it names a
 * protocol, which the plane drops as it drops any such connection); fails when refused, or when
 * `signal` aborts first. A hop whose frames travel a data plane probes it beside the stage's RPC
 * port: a firewall may block the one and still pass the other.
 */
export async function probeTcpPlane(endpoint: string, signal: AbortSignal): Promise<void> {
  const { host, port } = splitHostPort(endpoint);
  const conn = await Deno.connect({ hostname: host, port, transport: "tcp", signal });
  closeQuietly(conn);
}

/** How long a connection to a data plane may take before the caller uses gRPC instead (ms). */
export const PLANE_CONNECT_TIMEOUT_MS = 3000;
/** How long an endpoint whose connection timed out is not dialled again (ms). */
const UNREACHABLE_MS = 30_000;
/** Data planes whose connection timed out: endpoint → until when (ms) callers skip them. */
const unreachableUntil = new Map<string, number>();

/** A trailer envelope: OK, or `err`'s code and (bounded) message. */
export function trailerEnvelope(err?: ConnectError): Uint8Array {
  const body = new TextEncoder().encode(
    JSON.stringify(err ? { code: err.code, message: err.rawMessage.slice(0, 1024) } : { code: 0 }),
  );
  return grpcEnvelope(body, TRAILER_FLAG);
}

/** A trailer's status: null for OK, else the error it carries (malformed: Internal). */
export function parseTrailer(body: Uint8Array, from: string): ConnectError | null {
  try {
    const t = JSON.parse(new TextDecoder().decode(body));
    const code = Number(t.code);
    if (code === 0) return null;
    if (Number.isInteger(code) && Code[code] !== undefined) {
      return new ConnectError(String(t.message ?? "").slice(0, 1024), code as Code);
    }
  } catch { /* below */ }
  return new ConnectError(`malformed trailer from ${from}`, Code.Internal);
}

/**
 * Bodies up to this size are allocated whole when their header arrives (a model chunk, 1 MiB
 * and its fields, is one); larger ones as their bytes arrive.
 */
const EAGER_BODY_BYTES = 2 << 20;

/** One envelope as read: its flags and a body in a buffer of its own. */
export interface Envelope {
  flags: number;
  body: Uint8Array;
}

/**
 * Reads envelopes from a connection through a buffer of its own, so a small message costs one
 * read, not two. Bodies are fresh copies (each in a buffer of its own: a fetcher frees a chunk
 * by detaching it).
 */
export class FrameReader {
  #buf = new Uint8Array(64 << 10);
  #start = 0;
  #end = 0;

  /** @param maxBytes the largest message accepted (a caller may change it between messages) */
  constructor(private readonly conn: Deno.Conn, public maxBytes: number) {}

  /** The next envelope; null at a clean end of stream between envelopes. */
  async next(): Promise<Envelope | null> {
    if (!(await this.#fill(5))) return null;
    const flags = this.#buf[this.#start];
    const n = new DataView(this.#buf.buffer, this.#start + 1, 4).getUint32(0);
    if (n > this.maxBytes) {
      throw new ConnectError(
        `message of ${n} bytes exceeds the limit of ${this.maxBytes}`,
        Code.ResourceExhausted,
      );
    }
    this.#start += 5;
    const have = Math.min(n, this.#end - this.#start);
    const first = this.#buf.subarray(this.#start, this.#start + have);
    this.#start += have;
    if (n <= EAGER_BODY_BYTES) {
      const body = new Uint8Array(n);
      body.set(first);
      if (have < n) await readInto(this.conn, body.subarray(have), false);
      return { flags, body };
    }
    // A large message is held as it arrives, not allocated whole from its header: a peer
    // announcing 256 MiB and sending nothing would otherwise cost 256 MiB per connection.
    const parts = [first.slice()];
    for (let got = have; got < n;) {
      const part = new Uint8Array(Math.min(n - got, EAGER_BODY_BYTES));
      await readInto(this.conn, part, false);
      parts.push(part);
      got += part.length;
    }
    const body = new Uint8Array(n);
    let at = 0;
    for (const p of parts) {
      body.set(p, at);
      at += p.length;
    }
    return { flags, body };
  }

  /** Buffer at least `n` bytes; false at a clean end of stream with nothing buffered. */
  async #fill(n: number): Promise<boolean> {
    if (this.#end - this.#start >= n) return true;
    if (this.#start > 0) {
      this.#buf.copyWithin(0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#start = 0;
    }
    while (this.#end < n) {
      const got = await this.conn.read(this.#buf.subarray(this.#end));
      if (got === null) {
        if (this.#end === 0) return false;
        throw new ConnectError("the stream ended inside a message", Code.DataLoss);
      }
      this.#end += got;
    }
    return true;
  }
}

/** Write all of `bytes`. */
/**
 * Most milliseconds a write may wait for the peer to read: a peer that stops reading (a frozen
 * process, a hostile client) must not hold a session or a connection slot here for longer.
 */
export const WRITE_TIMEOUT_MS = 60_000;

/**
 * Write all of `bytes`; a peer that takes none of them for `timeoutMs` gets its connection
 * closed (DeadlineExceeded). A peer that reads slowly but reads is waited for.
 */
export async function writeAll(
  conn: Deno.Conn,
  bytes: Uint8Array,
  timeoutMs = WRITE_TIMEOUT_MS,
): Promise<void> {
  let stalled = false;
  const arm = () =>
    setTimeout(() => {
      stalled = true;
      closeQuietly(conn);
    }, timeoutMs);
  let timer = arm();
  try {
    for (let done = 0; done < bytes.length;) {
      done += await conn.write(bytes.subarray(done));
      if (done < bytes.length) {
        clearTimeout(timer);
        timer = arm();
      }
    }
  } catch (e) {
    if (!stalled) throw e;
    throw new ConnectError(
      `the peer read nothing for ${timeoutMs / 1000} s; connection closed`,
      Code.DeadlineExceeded,
    );
  } finally {
    clearTimeout(timer);
  }
}

/** Fill `into`; false at a clean end of stream before its first byte (when `eofOk`). */
export async function readInto(
  conn: Deno.Conn,
  into: Uint8Array,
  eofOk: boolean,
): Promise<boolean> {
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

/** `n` bytes from `conn` within `timeoutMs`, or a failure when it ends first or `signal` fires. */
export async function readExact(
  conn: Deno.Conn,
  n: number,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  const cut = () => closeQuietly(conn);
  const timer = setTimeout(cut, timeoutMs);
  signal?.addEventListener("abort", cut, { once: true });
  try {
    await readInto(conn, out, false);
    return out;
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", cut);
  }
}

/** Whether `e` is a peer going away mid-write or mid-read. */
export function isBrokenConnection(e: unknown): boolean {
  return e instanceof Deno.errors.BrokenPipe || e instanceof Deno.errors.ConnectionReset ||
    e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted;
}

/**
 * End a connection whose peer may still be sending (its request, its next frames): shut down
 * this side's writing, then read and drop what arrives for at most 1 s before closing. Closing
 * with unread bytes would send a reset, which can reach the peer before the trailer it was sent
 * and turn a precise answer into "connection reset".
 */
export async function lingerClose(conn: Deno.Conn): Promise<void> {
  try {
    await conn.closeWrite();
    const buf = new Uint8Array(16 << 10);
    const until = Date.now() + 1000;
    const timer = setTimeout(() => closeQuietly(conn), 1000);
    try {
      while (Date.now() < until && (await conn.read(buf)) !== null) { /* dropped */ }
    } finally {
      clearTimeout(timer);
    }
  } catch { /* the peer went away: nothing to wait for */ }
  closeQuietly(conn);
}

/** Close, ignoring "already closed". */
export function closeQuietly(c: { close(): void }): void {
  try {
    c.close();
  } catch { /* already closed */ }
}
