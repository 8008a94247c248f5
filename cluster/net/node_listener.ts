/**
 * A `node:net` server kept to its {@linkcode ConnectionLimits} and kept accepting.
 *
 * Why the probe: under Deno 2.9 a `node:net` server whose accept fails with EMFILE emits no
 * `error`, never calls its connection handler with one, still says `listening`, and never
 * accepts again (the kernel queues connections until its backlog is full, then drops them);
 * closing it and listening again on the same port revives it, and the connections it had stay
 * open (tests/cluster/net/exhaustion_test.ts). Nothing tells the program, so each guarded
 * listener connects to itself every `probeEveryMs`: a probe the server does not see within a
 * second of live event loop means the accept loop is dead, and the listener is opened again; a
 * probe that cannot get a descriptor itself means the process is at its limit, and it is retried
 * from 5 ms, doubling to 1 s, until it can.
 *
 * @module
 */
import net from "node:net";
import { ACCEPT_BACKOFF_MIN_MS, AcceptBackoff, stderrWarn, type Warn } from "./backoff.ts";
import { type CloseReason, ConnectionGuard, type ConnectionLimits } from "./connection_guard.ts";
import { isLocalExhaustion } from "./exhaustion.ts";
import { joinHostPort } from "./host_port.ts";

/** How often a guarded listener checks that it still accepts (ms). */
export const DEFAULT_PROBE_EVERY_MS = 5000;
/** Live event-loop time a probe waits for the server to take it (ms). */
const ACCEPT_WITHIN_MS = 1000;

/** What a served connection tells its guard. */
export interface ConnectionActivity {
  /** A request or stream started. */
  busy(): void;
  /** A request or stream ended. */
  done(): void;
}

/** Options of {@linkcode guardListener}. */
export interface GuardedListenerOptions {
  /** The listener as users know it, for warnings ("metrics listener"). */
  name: string;
  limits: ConnectionLimits;
  /** Serve an admitted socket, reporting its requests through `activity`. */
  serve(socket: net.Socket, activity: ConnectionActivity): void;
  /** Close a connection the guard gives up on; default: destroy the socket. */
  close?: (socket: net.Socket, why: CloseReason) => void;
  /**
   * Turn away a new connection while every open one is busy; default: destroy it (an HTTP
   * listener may answer a 503 first).
   */
  refuse?: (socket: net.Socket) => void;
  /** How often to check the listener still accepts (ms); 0: never. Default 5 s. */
  probeEveryMs?: number;
  warn?: Warn;
}

/** A guarded `node:net` listener. */
export interface GuardedListener {
  /** Its connections. */
  readonly guard: ConnectionGuard<net.Socket>;
  /** How many times it was opened again after its accept loop died. */
  readonly relistens: number;
  /** Stop probing and forget the connections (before closing the server). */
  stop(): void;
}

/**
 * Serve `server`'s connections under `opts.limits` and keep it accepting (see the module doc).
 * Call once the server is listening; do not give it another `connection` handler.
 */
export function guardListener(server: net.Server, opts: GuardedListenerOptions): GuardedListener {
  const warn = opts.warn ?? stderrWarn;
  const addr = server.address() as net.AddressInfo;
  const { address: host, port } = addr;
  const backoff = new AcceptBackoff(`${opts.name} on ${joinHostPort(host, port)}`, warn);
  const guard = new ConnectionGuard<net.Socket>(
    opts.limits,
    opts.close ?? ((s) => s.destroy()),
  );
  /** Probes in flight: the probe's local port → mark it seen. */
  const probes = new Map<number, () => void>();
  /**
   * Connections accepted lately, by their remote port: the server may see a probe before the
   * probe's own connect has returned and registered it (both ends are this process, and which
   * callback runs first is up to the runtime); the probe then looks here.
   */
  const lately = new Map<number, { socket: net.Socket; at: number }>();
  server.on("connection", (socket: net.Socket) => {
    // A reset before anything is read must not crash the process; the layers above report
    // errors that matter through their own events.
    socket.on("error", () => {});
    const from = socket.remotePort ?? -1;
    const probe = probes.get(from);
    if (probe) {
      probe();
      socket.destroy();
      return;
    }
    // Oldest first (insertion order): those past a probe's wait are no probe's any more.
    const now = performance.now();
    for (const [p, e] of lately) {
      if (now - e.at < ACCEPT_WITHIN_MS) break;
      lately.delete(p);
    }
    lately.set(from, { socket, at: now });
    socket.once("close", () => {
      if (lately.get(from)?.socket === socket) lately.delete(from);
    });
    if (!guard.admit(socket)) {
      (opts.refuse ?? ((s) => s.destroy()))(socket);
      return;
    }
    socket.once("close", () => guard.release(socket));
    opts.serve(socket, { busy: () => guard.busy(socket), done: () => guard.done(socket) });
  });

  let stopped = false;
  let relistens = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const every = opts.probeEveryMs ?? DEFAULT_PROBE_EVERY_MS;
  const next = (ms: number) => {
    if (stopped || every <= 0) return;
    timer = setTimeout(check, ms);
    // The probe must not keep a process alive that has nothing else to do.
    Deno.unrefTimer(timer as unknown as number);
  };
  const check = async () => {
    const seen = await probe(dialHost(host), port, probes, lately);
    if (stopped) return;
    if (seen === true) {
      backoff.ok();
      return next(every);
    }
    if (seen !== false) return next(backoff.failed(seen));
    // Deaf: the runtime's accept loop is gone. The old socket is dropped and a new one bound.
    const delay = backoff.failed(
      new Error("the listener stopped accepting (its accept loop ended, e.g. after EMFILE)"),
    );
    try {
      await relisten(server, host, port);
      relistens++;
      next(ACCEPT_BACKOFF_MIN_MS);
    } catch (e) {
      warn(`${opts.name}: cannot listen on ${joinHostPort(host, port)} again`, {
        error: String(e),
      });
      next(delay);
    }
  };
  next(every);
  return {
    guard,
    get relistens() {
      return relistens;
    },
    stop() {
      stopped = true;
      clearTimeout(timer);
      guard.clear();
    },
  };
}

/**
 * Connect to the listener and wait for it to take the connection: true when it did, false when
 * it did not (or refused: not listening), the error when this process could not open a socket.
 */
async function probe(
  host: string,
  port: number,
  probes: Map<number, () => void>,
  lately: Map<number, { socket: net.Socket }>,
): Promise<boolean | Error> {
  let conn: Deno.TcpConn;
  try {
    conn = await Deno.connect({
      hostname: host,
      port,
      transport: "tcp",
      signal: AbortSignal.timeout(ACCEPT_WITHIN_MS),
    });
  } catch (e) {
    // Out of descriptors here: nothing is known about the listener yet.
    if (isLocalExhaustion(e)) return e as Error;
    // Refused (not listening) or no answer (its backlog is full): deaf.
    return false;
  }
  const local = (conn.localAddr as Deno.NetAddr).port;
  let seen = false;
  probes.set(local, () => (seen = true));
  // Taken before the connect returned: served as a client's, so closed here.
  const early = lately.get(local);
  if (early) {
    lately.delete(local);
    early.socket.destroy();
    seen = true;
  }
  try {
    // Only time the event loop ran counts: a long computation holding the loop delays the
    // accept callback too, and must not read as a dead listener.
    let live = 0;
    for (let waited = 0; !seen && live < ACCEPT_WITHIN_MS && waited < 30_000;) {
      const t = performance.now();
      await new Promise((r) => setTimeout(r, 50));
      const took = performance.now() - t;
      waited += took;
      if (took < 200) live += took;
    }
    return seen || live < ACCEPT_WITHIN_MS;
  } finally {
    probes.delete(local);
    try {
      conn.close();
    } catch { /* closed */ }
  }
}

/** Drop the server's listening socket and bind a new one on the same address. */
function relisten(server: net.Server, host: string, port: number): Promise<void> {
  // Open connections are not the listening socket's: they stay.
  if (server.listening) server.close();
  return new Promise<void>((resolve, reject) => {
    const failed = (e: Error) => reject(e);
    server.once("error", failed);
    server.listen(port, host, () => {
      server.off("error", failed);
      resolve();
    });
  });
}

/** An address to reach a listener bound to `host` on (a wildcard is reached on loopback). */
function dialHost(host: string): string {
  if (host === "0.0.0.0") return "127.0.0.1";
  if (host === "::" || host === "::0") return "::1";
  return host;
}
