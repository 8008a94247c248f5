/**
 * The bounds of the agent's node:net listeners on real loopback sockets: connections over the
 * cap are closed (the oldest silent one making room), a silent connection is closed after its
 * timeout, and a connection with a call in flight (a gRPC stream, a slow /metrics) is not.
 */
import { assert, assertEquals } from "../../support/assert.ts";
import { createClient } from "@connectrpc/connect";
import { startMetricsServer } from "../../../cluster/telemetry/server.ts";
import { startRpcServer } from "../../../cluster/rpc/server.ts";
import { createRpcTransport } from "../../../cluster/rpc/transport.ts";
import { NodeService } from "../../../proto/mod.ts";
import { testMembership, testRoutes } from "../rpc/fixtures.ts";

/** Whether the server closed `conn` within `ms` (EOF or reset), reading nothing else. */
async function closedWithin(conn: Deno.Conn, ms: number): Promise<boolean> {
  const timer = setTimeout(() => conn.close(), ms);
  try {
    const n = await conn.read(new Uint8Array(64));
    return n === null;
  } catch (e) {
    // Our own timer closed it: still open on the server's side.
    return !(e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted);
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed */ }
  }
}

const dial = (port: number) => Deno.connect({ hostname: "127.0.0.1", port });

Deno.test("metrics listener: over the cap the oldest silent connection goes; silent ones time out; a slow request stays", async () => {
  let slow = 0;
  const server = await startMetricsServer({
    port: 0,
    limits: { maxConnections: 3, silentMs: 400, idleMs: 400 },
    probeEveryMs: 0,
    metrics: async () => {
      // Longer than both timeouts: a request in flight must not be cut.
      if (slow++ === 0) await new Promise((r) => setTimeout(r, 900));
      return { text: "up 1\n", contentType: "text/plain" };
    },
    readiness: () => ({ serving: true }),
  });
  try {
    const busy = await dial(server.port);
    await busy.write(new TextEncoder().encode("GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n"));
    await new Promise((r) => setTimeout(r, 50));
    const a = await dial(server.port);
    await new Promise((r) => setTimeout(r, 20));
    const b = await dial(server.port);
    await new Promise((r) => setTimeout(r, 20));
    // Fourth: over the cap; the oldest silent one (a) makes room, not the busy one.
    const c = await dial(server.port);
    assert(await closedWithin(a, 200), "the oldest silent connection was not evicted");
    // b and c send nothing: closed after silentMs.
    const t0 = performance.now();
    assert(await closedWithin(b, 1500), "a silent connection stayed open");
    assert(performance.now() - t0 < 700);
    assert(await closedWithin(c, 1500), "a silent connection stayed open");
    // The slow request is answered, on its connection, after both timeouts.
    const buf = new Uint8Array(4096);
    const n = await busy.read(buf);
    assert(n !== null && new TextDecoder().decode(buf.subarray(0, n)).startsWith("HTTP/1.1 200"));
    busy.close();
  } finally {
    await server.close();
  }
});

Deno.test("metrics listener: with every connection busy, a new one is closed at once", async () => {
  let release = () => {};
  const held = new Promise<void>((r) => (release = r));
  const server = await startMetricsServer({
    port: 0,
    limits: { maxConnections: 2, silentMs: 5000, idleMs: 5000 },
    probeEveryMs: 0,
    metrics: async () => {
      await held;
      return { text: "", contentType: "text/plain" };
    },
    readiness: () => ({ serving: true }),
  });
  const conns: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      const c = await dial(server.port);
      await c.write(new TextEncoder().encode("GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n"));
      conns.push(c);
    }
    await new Promise((r) => setTimeout(r, 100));
    assert(await closedWithin(await dial(server.port), 500), "over the cap, yet kept open");
  } finally {
    release();
    for (const c of conns) c.close();
    await server.close();
  }
});

Deno.test("RPC listener: a silent connection is closed after the timeout while a stream runs on", async () => {
  const view = testMembership();
  const server = await startRpcServer({
    port: 0,
    routes: testRoutes(view),
    limits: { maxConnections: 16, silentMs: 300, idleMs: 300 },
    probeEveryMs: 0,
  });
  const transport = await createRpcTransport(`127.0.0.1:${server.port}`);
  try {
    const silent = await dial(server.port);
    // A stream lasting 4× the silent and idle bounds.
    const stream = (async () => {
      let n = 0;
      const node = createClient(NodeService, transport);
      for await (const _ of node.streamMetrics({ intervalMs: 200, maxSamples: 6 })) n++;
      return n;
    })();
    // Slow-loris: HTTP/1.1 headers that never end.
    const loris = await dial(server.port);
    await loris.write(new TextEncoder().encode("GET / HTTP/1.1\r\nhost: x\r\n"));
    assert(await closedWithin(silent, 1500), "a silent connection stayed open");
    assert(await closedWithin(loris, 1500), "a connection without whole headers stayed open");
    assertEquals(await stream, 6);
  } finally {
    transport.close();
    await server.close();
  }
});

Deno.test("metrics listener: a keep-alive connection answers its second scrape", async () => {
  // Handed to the HTTP server from a plain TCP listener (emit "connection"), a connection got no
  // answer to its second request under Deno 2.9, while the first one said keep-alive.
  const m = await startMetricsServer({
    port: 0,
    metrics: () => Promise.resolve({ text: "up 1\n", contentType: "text/plain" }),
    readiness: () => ({ serving: true }),
  });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: m.port });
  try {
    const get = new TextEncoder().encode("GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n");
    const buf = new Uint8Array(4096);
    for (const scrape of [1, 2]) {
      await conn.write(get);
      let text = "";
      // The whole answer: its body, and the last chunk when the body is chunked.
      const whole = () =>
        text.includes("up 1\n") &&
        (!/transfer-encoding: chunked/i.test(text) || text.endsWith("\r\n0\r\n\r\n"));
      while (!whole()) {
        const n = await conn.read(buf);
        if (n === null) break;
        text += new TextDecoder().decode(buf.subarray(0, n));
      }
      assert(
        text.startsWith("HTTP/1.1 200") && whole(),
        `scrape ${scrape}: ${text}`,
      );
    }
  } finally {
    conn.close();
    await m.close();
  }
});

Deno.test("a healthy listener passes its own probe: no warning, no reopening", async () => {
  // The server may take the probe's connection before the probe's connect returns and registers
  // it (both ends are this process): every agent warned "cannot accept connections" at its first
  // probe, 5 s after start, and reopened all four listeners.
  const warnings: string[] = [];
  const m = await startMetricsServer({
    port: 0,
    probeEveryMs: 100,
    warn: (msg) => warnings.push(msg),
    metrics: () => Promise.resolve({ text: "up 1\n", contentType: "text/plain" }),
    readiness: () => ({ serving: true }),
  });
  try {
    await new Promise((r) => setTimeout(r, 2000));
    assertEquals(warnings, []);
  } finally {
    await m.close();
  }
});
