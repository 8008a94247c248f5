/**
 * An agent's five listeners in one process, for exhaustion_test.ts to run under a low
 * `ulimit -n`: prints their ports, then answers "exhaust" (hold every free descriptor),
 * "attribute" (open a session on a stage here, and say what error the head would get),
 * "release" (give the descriptors back) and "quit".
 */
import { startMetricsServer } from "../../../cluster/telemetry/server.ts";
import { startRpcServer } from "../../../cluster/rpc/server.ts";
import { createRpcTransport } from "../../../cluster/rpc/transport.ts";
import { startTcpPlane } from "../../../cluster/rpc/tcp_plane.ts";
import { UdpTransport } from "../../../cluster/gossip/transport.ts";
import { RemoteStageLink } from "../../../cluster/pipeline/remote_link.ts";
import { startApiServer } from "../../../cluster/api/server.ts";

// Registered now: the runtime opens a descriptor for its first signal listener, and panics
// when it cannot (the agent registers SIGTERM at start the same way).
Deno.addSignalListener("SIGTERM", () => Deno.exit(0));
const limits = { maxConnections: 100_000 }; // no cap: the point is to reach EMFILE
const probeEveryMs = 200;
const metrics = await startMetricsServer({
  port: 0,
  limits,
  probeEveryMs,
  metrics: () => Promise.resolve({ text: "", contentType: "text/plain" }),
  readiness: () => ({ serving: true }),
});
const rpc = await startRpcServer({ port: 0, routes: () => {}, limits, probeEveryMs });
const plane = await startTcpPlane({
  host: "127.0.0.1",
  protocols: { TEST: { serve: () => Promise.resolve(), maxConnections: 100_000 } },
});
const gossip = await UdpTransport.listen({
  port: 0,
  streamLimits: limits,
  probeEveryMs,
});
const api = await startApiServer({
  port: 0,
  maxConnections: limits.maxConnections,
  probeEveryMs,
  generator: {
    models: () => [],
    health: () => ({ status: "ok" }),
    generate: async function* () {},
  },
});
const transport = await createRpcTransport(`127.0.0.1:${rpc.port}`);
console.log(JSON.stringify({
  metrics: metrics.port,
  rpc: rpc.port,
  plane: plane.port,
  gossip: Number(gossip.addr.split(":")[1]),
  api: api.port,
}));
const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream());
let buf = "";
const held: Deno.FsFile[] = [];
for await (const chunk of lines) {
  buf += chunk;
  for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
    const cmd = buf.slice(0, i);
    buf = buf.slice(i + 1);
    if (cmd === "exhaust") {
      try {
        for (;;) held.push(Deno.openSync("/dev/null"));
      } catch { /* EMFILE: every descriptor is taken */ }
      console.log(JSON.stringify({ held: held.length }));
    } else if (cmd === "release") {
      for (const f of held.splice(0)) f.close();
      console.log("{}");
    } else if (cmd === "attribute") {
      const link = new RemoteStageLink("b", 0, 5, transport, {
        dataEndpoint: `127.0.0.1:${plane.port}`,
      });
      const e = await link.openSession({
        sessionId: "s",
        maxContext: 16,
        model: "m",
        epoch: 0n,
        downstream: [],
      }).then(() => undefined, (e) => e as Error & { nodeId?: string });
      console.log(JSON.stringify({ name: e?.name, nodeId: e?.nodeId, message: e?.message }));
    } else if (cmd === "quit") {
      transport.close();
      await Promise.all([
        metrics.close(),
        rpc.close(0),
        plane.close(),
        gossip.close(),
        api.close(),
      ]);
      Deno.exit(0);
    }
  }
}
