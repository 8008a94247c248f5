/** Raw TCP clients for tests of the data plane (cluster/rpc/tcp_plane.ts): bytes in, bytes out. */

/**
 * Everything a server on loopback `port` sends back after `bytes` (then a half-close, unless
 * `halfClose` is false), until it closes the connection.
 */
export async function rawAnswer(
  port: number,
  bytes: Uint8Array,
  halfClose = true,
): Promise<Uint8Array> {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await c.write(bytes);
    if (halfClose) await c.closeWrite();
    const out: number[] = [];
    const buf = new Uint8Array(4096);
    for (;;) {
      const n = await c.read(buf).catch(() => null);
      if (n === null) break;
      out.push(...buf.subarray(0, n));
    }
    return new Uint8Array(out);
  } finally {
    try {
      c.close();
    } catch { /* closed by the server */ }
  }
}

/** `text`'s bytes followed by `bytes` (a preamble and what follows it). */
export function withPreamble(text: string, bytes: Uint8Array): Uint8Array {
  return new Uint8Array([...new TextEncoder().encode(text), ...bytes]);
}
