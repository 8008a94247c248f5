/**
 * The socket under a client HTTP/2 session, its errors delivered a turn late.
 *
 * Under Deno, a server that accepts the connection and closes it at once (a port of another
 * service, a rogue peer, an agent shutting down) makes the session's first write fail with EPIPE
 * in the same turn as its `connect` event. connect-node has by then taken its connecting
 * listener off and not yet put its session listener on (that happens in a promise callback), so
 * the error was uncaught: llmctl died with "Uncaught Error: write EPIPE", and a process that
 * kept running (a test runner, a handler catching it) found the interrupted session spinning
 * its event loop at 100% CPU, the call never returning. Delivered a turn late, the error finds
 * the session's listener, which destroys the session, and the call fails with it at once.
 *
 * Plaintext only (`http:`): under TLS the peer must first finish a handshake with a certificate
 * the client trusts, and the TLS socket stays the one `http2.connect` makes itself.
 *
 * @module
 */
import net from "node:net";
import { setImmediate } from "node:timers";
import type { Duplex } from "node:stream";

/** `http2.connect`'s `createConnection` for `http:`: a TCP socket, errors a turn late. */
export function h2Socket(authority: URL): Duplex {
  // URL keeps an IPv6 host in brackets; sockets take it bare.
  const host = authority.hostname.replace(/^\[(.*)\]$/, "$1");
  return deferErrors(net.connect({ host, port: Number(authority.port) || 80 }));
}

/** `socket`, its "error" events emitted on the next turn of the event loop, if heard then. */
function deferErrors<S extends net.Socket>(socket: S): S {
  const emit = socket.emit.bind(socket) as (event: string | symbol, ...args: unknown[]) => boolean;
  socket.emit = ((event: string | symbol, ...args: unknown[]): boolean => {
    if (event !== "error") return emit(event, ...args);
    // A turn late the session may be gone (closed by its owner meanwhile) with its listener:
    // an error nobody hears would only be uncaught.
    setImmediate(() => socket.listenerCount("error") > 0 && emit(event, ...args));
    return true;
  }) as S["emit"];
  return socket;
}
