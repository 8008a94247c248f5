import * as http2 from "node:http2";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import {
  checkBindAddress,
  createRpcTransport,
  DEFAULT_MAX_REQUEST_BYTES,
  EndpointError,
  endpointUrl,
  explainRpcError,
  grpcEnvelope,
  MAX_CONCURRENT_STREAMS,
  RAW_SERVER_STREAMS,
  RpcFailure,
  type RpcProtocol,
  RpcServerError,
  startRpcServer,
  toConnectError,
} from "../../../cluster/rpc/mod.ts";
import { initCertificates } from "../../../cluster/tls/mod.ts";
import { grpcHealthService, Health, HealthStatus } from "../../../cluster/rpc/health.ts";
import {
  ActivationFrameSchema,
  DiscoveryService,
  ForwardResponseSchema,
  GenerateResponseSchema,
  GetClusterInfoResponseSchema,
  HealthCheckResponse_ServingStatus,
  InferenceService,
  NodeMetricsSchema,
  NodeService,
  NodeState,
  TransferService,
} from "../../../proto/mod.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "../../support/assert.ts";
import { enveloped, makeCerts, rawCall, startTestAgent, testMembership } from "./fixtures.ts";
import { nodeService } from "../../../cluster/discovery/mod.ts";

const cases: { protocol: RpcProtocol; httpVersion: "1.1" | "2" }[] = [
  { protocol: "grpc", httpVersion: "2" },
  { protocol: "connect", httpVersion: "2" },
  { protocol: "connect", httpVersion: "1.1" },
  { protocol: "grpc-web", httpVersion: "2" },
  { protocol: "grpc-web", httpVersion: "1.1" },
];

Deno.test("one plaintext port serves gRPC, Connect and gRPC-web over HTTP/2 and HTTP/1.1", async () => {
  const { server } = await startTestAgent();
  try {
    assertEquals(server.host, "127.0.0.1");
    assert(server.url.startsWith("http://127.0.0.1:"), server.url);
    for (const c of cases) {
      const transport = await createRpcTransport(`127.0.0.1:${server.port}`, c);
      try {
        const info = await createClient(DiscoveryService, transport).getClusterInfo({});
        assertEquals(info.responderId, "a", `${c.protocol}/${c.httpVersion}`);
        assertEquals(info.nodes.map((n) => n.id), ["a", "b", "c"]);
        const health = await createClient(NodeService, transport).healthCheck({});
        assertEquals(health.status, HealthCheckResponse_ServingStatus.SERVING);
        // A server stream works on every protocol too.
        const samples = [];
        for await (
          const s of createClient(NodeService, transport).streamMetrics({
            maxSamples: 2,
            intervalMs: 100,
          })
        ) samples.push(s);
        assertEquals(samples.length, 2, `${c.protocol}/${c.httpVersion} stream`);
      } finally {
        transport.close();
      }
    }
  } finally {
    await server.close();
  }
});

Deno.test("gzip: compressed requests are accepted and large answers come back compressed", async () => {
  const { server, view } = await startTestAgent();
  // 300 members make GetClusterInfo's answer large enough (> 1 KiB) to be worth compressing.
  for (let i = 0; i < 300; i++) {
    view.upsert({ id: `n${String(i).padStart(3, "0")}`, addresses: [`10.0.${i >> 8}.${i & 255}`] });
  }
  try {
    const url = `${server.url}/distributed_llm.v1.DiscoveryService/GetClusterInfo`;
    // Connect unary over HTTP/1.1 with fetch: the body is gzip, and we ask for gzip back.
    const body = new Blob([JSON.stringify({ includeDeparted: true })]).stream()
      .pipeThrough(new CompressionStream("gzip"));
    const res = await fetch(url, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "content-encoding": "gzip",
        "accept-encoding": "gzip",
      },
      body: await new Response(body).arrayBuffer(),
    });
    assertEquals(res.status, 200);
    assertEquals(res.headers.get("content-encoding"), "gzip");
    const json = await res.json(); // fetch decompresses
    assertEquals(json.nodes.length, 304);
    // And the Deno gRPC client (gzip both ways) sees the same.
    const transport = await createRpcTransport(`127.0.0.1:${server.port}`, { gzip: true });
    try {
      const info = await createClient(DiscoveryService, transport).getClusterInfo({
        includeDeparted: true,
      });
      assertEquals(info.nodes.length, 304);
      assert(toBinary(GetClusterInfoResponseSchema, info).length > 1024);
    } finally {
      transport.close();
    }
  } finally {
    await server.close();
  }
});

Deno.test("plaintext on a non-loopback address is refused unless --insecure-bind-all", async () => {
  const err = await assertRejects(
    () => startRpcServer({ host: "0.0.0.0", port: 0, routes: () => {} }),
    RpcServerError,
    "refusing to serve RPC in plaintext on 0.0.0.0",
  );
  assert(err.message.includes("--insecure-bind-all"), err.message);
  assert(err.message.includes("--tls-cert"), err.message);
  assertThrows(() => checkBindAddress("::", { tls: false }), RpcServerError, "plaintext on ::");
  assertThrows(() => checkBindAddress("192.168.1.5", { tls: false }), RpcServerError);
  for (const ok of ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"]) {
    checkBindAddress(ok, { tls: false });
  }
  checkBindAddress("0.0.0.0", { tls: true });
  checkBindAddress("0.0.0.0", { tls: false, insecureBindAll: true });
  // With the flag it really binds (on all interfaces, an ephemeral port; nothing is sent to it
  // from outside this machine).
  const server = await startRpcServer({
    host: "0.0.0.0",
    port: 0,
    insecureBindAll: true,
    routes: () => {},
  });
  await server.close();
});

Deno.test("a port in use is reported with the flag to change", async () => {
  const first = await startRpcServer({ port: 0, routes: () => {} });
  try {
    await assertRejects(
      () => startRpcServer({ port: first.port, routes: () => {} }),
      RpcServerError,
      "already in use",
    );
  } finally {
    await first.close();
  }
});

Deno.test("mTLS: a peer's certificate may name its node id instead of the address dialled", async () => {
  // Agents dial each other at advertised addresses; `certs init --nodes a,b` names a's
  // certificate "a", localhost and 127.0.0.1 only. Before, every peer at another address was
  // refused ("IP: 127.0.0.2 is not in the cert's list") and each agent was left on its own.
  const certs = await makeCerts();
  const { server } = await startTestAgent({ tls: certs.node, host: "127.0.0.2" });
  const endpoint = `127.0.0.2:${server.port}`;
  const peer = { cert: `${certs.dir}/b.crt`, key: `${certs.dir}/b.key`, ca: `${certs.dir}/ca.crt` };
  const health = async (serverName?: string) => {
    const t = await createRpcTransport(endpoint, { tls: { ...peer, serverName } });
    try {
      return (await createClient(NodeService, t).healthCheck({})).nodeId;
    } catch (e) {
      return (e as Error).message;
    } finally {
      t.close();
    }
  };
  try {
    assertEquals(await health("a"), "a");
    assert((await health()).includes("127.0.0.2 is not in the cert's list"));
    // The certificate of another node does not pass for this one.
    const wrong = await health("b");
    assert(wrong.includes(`names none of "b" nor 127.0.0.2`), wrong);
    // Any of several names will do (a member's node id, or the name a shared certificate has).
    const t = await createRpcTransport(endpoint, { tls: { ...peer, serverName: ["pod-1", "a"] } });
    try {
      assertEquals((await createClient(NodeService, t).healthCheck({})).nodeId, "a");
    } finally {
      t.close();
    }
  } finally {
    await server.close();
    await Deno.remove(certs.dir, { recursive: true });
  }
});

Deno.test("mTLS: a client certificate from the CA works; none, or another CA's, is refused", async () => {
  const certs = await makeCerts();
  const { server } = await startTestAgent({ tls: certs.node });
  const other = await Deno.makeTempDir({ prefix: "dllm-other-ca-" });
  await initCertificates({ dir: other, nodes: ["x"] });
  try {
    assert(server.url.startsWith("https://"), server.url);
    const endpoint = `127.0.0.1:${server.port}`;
    // connect-node's Connect-over-HTTP/1.1 client fails on TLS under Deno ("write EPERM",
    // a Deno node:https client quirk; the server side is fine): that case is covered below with
    // fetch, our clients use HTTP/2.
    for (const c of cases.filter((c) => !(c.protocol === "connect" && c.httpVersion === "1.1"))) {
      const t = await createRpcTransport(endpoint, { ...c, tls: certs.client });
      try {
        const h = await createClient(NodeService, t).healthCheck({});
        assertEquals(h.nodeId, "a", `${c.protocol}/${c.httpVersion}`);
      } finally {
        t.close();
      }
    }
    // Connect JSON over HTTP/1.1 with a client certificate, from Deno's fetch (what curl or a
    // browser behind a TLS-terminating proxy would do).
    const read = (p: string) => Deno.readTextFileSync(p);
    const client = Deno.createHttpClient({
      caCerts: [read(certs.client.ca)],
      cert: read(certs.client.cert),
      key: read(certs.client.key),
      http2: false,
    });
    const res = await fetch(`${server.url}/distributed_llm.v1.NodeService/HealthCheck`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
      client,
    });
    assertEquals((await res.json()).nodeId, "a");
    client.close();
    // A peer node's certificate (server + client use) is a valid client certificate too.
    const peer = await createRpcTransport(endpoint, {
      tls: { cert: `${certs.dir}/b.crt`, key: `${certs.dir}/b.key`, ca: `${certs.dir}/ca.crt` },
    });
    assertEquals((await createClient(NodeService, peer).healthCheck({})).nodeId, "a");
    peer.close();

    const refused = async (label: string, make: () => Promise<Transport & { close(): void }>) => {
      const t = await make();
      try {
        await createClient(NodeService, t).healthCheck({});
        throw new Error(`${label}: the call succeeded`);
      } catch (e) {
        assert(e instanceof ConnectError, `${label}: ${e}`);
        const text = explainRpcError(e, endpoint, { tls: label !== "plaintext" });
        assert(/TLS|certificate|reach/.test(text), `${label}: ${text}`);
      } finally {
        t.close();
      }
    };
    // No client certificate: the server demands one.
    const ca = await Deno.readTextFile(`${certs.dir}/ca.crt`);
    await refused("no cert", () => createRpcTransport(endpoint, { tls: { ca } }));
    await new Promise((r) => setTimeout(r, 100)); // a late second alert must not crash us
    // A client certificate from another CA.
    await refused("other CA", () =>
      createRpcTransport(endpoint, {
        tls: { cert: `${other}/x.crt`, key: `${other}/x.key`, ca: `${certs.dir}/ca.crt` },
      }));
    // Plaintext against the TLS port.
    await refused("plaintext", () => createRpcTransport(endpoint));
  } finally {
    await server.close();
    await Deno.remove(certs.dir, { recursive: true });
    await Deno.remove(other, { recursive: true });
  }
});

Deno.test("handler errors reach clients as precise codes with their messages", async () => {
  const { server } = await startTestAgent();
  try {
    const t = await createRpcTransport(`127.0.0.1:${server.port}`);
    const discovery = createClient(DiscoveryService, t);
    // RpcFailure("not_found") from the membership view.
    const e1 = await assertRejects(() => discovery.leaveCluster({ nodeId: "zz" }), ConnectError);
    assertEquals((e1 as ConnectError).code, Code.NotFound);
    assert(e1.message.includes('no member "zz"'), e1.message);
    // Validation → INVALID_ARGUMENT naming the field.
    const e2 = await assertRejects(
      () => discovery.registerWithCluster({ node: { id: "e", gossipPort: 7946 } }),
      ConnectError,
    );
    assertEquals((e2 as ConnectError).code, Code.InvalidArgument);
    assert(e2.message.includes("node.addresses"), e2.message);
    t.close();
  } finally {
    await server.close();
  }
});

Deno.test("toConnectError maps error kinds to codes", () => {
  assertEquals(
    toConnectError(new RpcFailure("resource_exhausted", "x")).code,
    Code.ResourceExhausted,
  );
  assertEquals(
    toConnectError(Object.assign(new Error("x"), { rpcCode: "unavailable" })).code,
    Code.Unavailable,
  );
  assertEquals(toConnectError(new Deno.errors.NotFound("no file")).code, Code.NotFound);
  assertEquals(toConnectError(new Deno.errors.ConnectionRefused("refused")).code, Code.Unavailable);
  assertEquals(toConnectError(new DOMException("stop", "AbortError")).code, Code.Canceled);
  const sp = new Error("temperature must be ≥ 0");
  sp.name = "SamplerParamError";
  assertEquals(toConnectError(sp).code, Code.InvalidArgument);
  const internal = toConnectError(new TypeError("x is undefined"));
  assertEquals(internal.code, Code.Internal);
  assert(internal.message.includes("DLLM_DEBUG"), internal.message);
  const same = new ConnectError("keep", Code.Aborted);
  assertEquals(toConnectError(same), same);
});

Deno.test("explainRpcError names the endpoint and the flag for an agent that is not there", async () => {
  // Grab a free port, then close it so nothing listens there.
  const probe = await startRpcServer({ port: 0, routes: () => {} });
  const port = probe.port;
  await probe.close();
  const t = await createRpcTransport(`127.0.0.1:${port}`);
  try {
    const e = await assertRejects(() => createClient(NodeService, t).healthCheck({}), ConnectError);
    const text = explainRpcError(e, `127.0.0.1:${port}`);
    assert(text.includes(`cannot reach the agent at 127.0.0.1:${port}`), text);
    assert(text.includes("--endpoint"), text);
  } finally {
    t.close();
  }
});

Deno.test("endpointUrl: host, host:port, IPv6 and URLs; scheme follows TLS", () => {
  assertEquals(endpointUrl("node-a", false), "http://node-a:7950");
  assertEquals(endpointUrl("10.0.0.5:9000", true), "https://10.0.0.5:9000");
  assertEquals(endpointUrl("::1", false), "http://[::1]:7950");
  assertEquals(endpointUrl("[::1]:7951", false), "http://[::1]:7951");
  assertEquals(endpointUrl("https://a:1/", true), "https://a:1");
  assertThrows(() => endpointUrl("http://a:1", true), Error, "TLS is on");
  // A path was taken into the URL (the agent answered Unimplemented), a bare IPv6 address with
  // a port failed as "Invalid URL", and port 0 was "no agent".
  for (const bad of ["127.0.0.1:37950/x", "::1:37950", "127.0.0.1:0", "a:1?x", "u@a:1"]) {
    assertThrows(
      () => endpointUrl(bad, false),
      EndpointError,
      `endpoint "${bad}" is not host:port`,
    );
  }
});

Deno.test("node states travel as enums, leave marks a member LEFT", async () => {
  const { server } = await startTestAgent();
  const t = await createRpcTransport(`127.0.0.1:${server.port}`, { protocol: "connect" });
  try {
    const d = createClient(DiscoveryService, t);
    assertEquals((await d.leaveCluster({ nodeId: "b", reason: "test" })).state, NodeState.LEFT);
    const info = await d.getClusterInfo({ includeDeparted: true });
    assertEquals(info.nodes.find((n) => n.id === "b")?.state, NodeState.LEFT);
    assertEquals(create(GetClusterInfoResponseSchema, info).clusterName, "test");
  } finally {
    t.close();
    await server.close();
  }
});

Deno.test("errors thrown mid-stream and unexpected errors are mapped too", async () => {
  const view = testMembership();
  let samples = 0;
  const server = await startRpcServer({
    port: 0,
    routes: (r) =>
      r.service(
        NodeService,
        nodeService({
          view,
          resources: () => {
            throw new TypeError("cannot read properties of undefined");
          },
          metrics: () => {
            if (++samples > 1) {
              throw new RpcFailure("resource_exhausted", "sampler overloaded; retry");
            }
            return create(NodeMetricsSchema, { nodeId: "a" });
          },
        }),
      ),
  });
  const t = await createRpcTransport(`127.0.0.1:${server.port}`);
  try {
    const node = createClient(NodeService, t);
    const e1 = await assertRejects(() => node.getResources({}), ConnectError);
    assertEquals((e1 as ConnectError).code, Code.Internal);
    assert(e1.message.includes("a bug in the agent"), e1.message);
    let got = 0;
    const e2 = await assertRejects(async () => {
      for await (const _ of node.streamMetrics({ intervalMs: 100, maxSamples: 5 })) got++;
    }, ConnectError);
    assertEquals(got, 1);
    assertEquals((e2 as ConnectError).code, Code.ResourceExhausted);
    assert(e2.message.includes("sampler overloaded"), e2.message);
  } finally {
    t.close();
    await server.close();
  }
});

Deno.test("a client that connects and resets does not take the server down", async () => {
  const { server } = await startTestAgent();
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await conn.write(new TextEncoder().encode("P"));
    conn.close();
    const raw = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    raw.close();
    const t = await createRpcTransport(`127.0.0.1:${server.port}`);
    assertEquals((await createClient(NodeService, t).healthCheck({})).nodeId, "a");
    t.close();
  } finally {
    await server.close();
  }
});

Deno.test("close() ends open streams after the grace period", async () => {
  const { server } = await startTestAgent();
  const t = await createRpcTransport(`127.0.0.1:${server.port}`);
  try {
    const stream = createClient(NodeService, t).streamMetrics({ intervalMs: 100 });
    const reading = (async () => {
      let n = 0;
      try {
        for await (const _ of stream) n++;
      } catch {
        // cut off by the server: expected
      }
      return n;
    })();
    await new Promise((r) => setTimeout(r, 250));
    const t0 = performance.now();
    await server.close(200);
    assert(performance.now() - t0 < 2000, "close() hung on an open stream");
    assert((await reading) >= 1);
  } finally {
    t.close();
  }
});

Deno.test("grpc-message is percent-encoded as gRPC says: spaces stay, non-ASCII and % do not", async () => {
  const reason = "no member «b» at 100%";
  const server = await startRpcServer({
    port: 0,
    routes: (r) =>
      r.service(DiscoveryService, {
        getClusterInfo() {
          throw new RpcFailure("not_found", reason);
        },
      }),
  });
  const session = http2.connect(`http://127.0.0.1:${server.port}`);
  try {
    // What any gRPC client reads off the wire: a trailers-only response carries the status in
    // its headers.
    const raw = await new Promise<string>((resolve, reject) => {
      const req = session.request({
        ":method": "POST",
        ":path": "/distributed_llm.v1.DiscoveryService/GetClusterInfo",
        "content-type": "application/grpc",
        te: "trailers",
      });
      let message: string | undefined;
      const take = (h: Record<string, unknown>) => {
        if (typeof h["grpc-message"] === "string") message = h["grpc-message"];
      };
      req.on("response", take);
      req.on("trailers", take);
      req.on("error", reject);
      req.on("close", () => resolve(message ?? "(none)"));
      req.end(new Uint8Array([0, 0, 0, 0, 0]));
      req.resume();
    });
    assertEquals(raw, "no member %C2%ABb%C2%BB at 100%25");
    // And Connect's own client still reads the reason back exactly.
    const t = await createRpcTransport(`127.0.0.1:${server.port}`);
    const e = await createClient(DiscoveryService, t).getClusterInfo({}).then(() => null, (e) => e);
    t.close();
    assert(e instanceof ConnectError, String(e));
    assertEquals(e.rawMessage, reason);
  } finally {
    session.close();
    await server.close();
  }
});

Deno.test("a call whose :authority does not parse is answered, and the server lives on", async () => {
  // Before: Connect threw building the request URL, outside any handler, and the agent died
  // with an uncaught TypeError: any client could end it, and every call to an agent bound to
  // IPv6 did (Deno's HTTP/2 client sends [::1]:7950 as ::1:7950).
  const server = await startRpcServer({
    port: 0,
    routes: (r) => r.service(DiscoveryService, { getClusterInfo: () => ({ clusterName: "c" }) }),
  });
  const session = http2.connect(`http://127.0.0.1:${server.port}`);
  try {
    for (const authority of ["::1:7950", "a:99999", "[::1"]) {
      const status = await new Promise<string>((resolve, reject) => {
        const req = session.request({
          ":method": "POST",
          ":path": "/distributed_llm.v1.DiscoveryService/GetClusterInfo",
          ":authority": authority,
          "content-type": "application/json",
        });
        req.on("response", (h) => resolve(String(h[":status"])));
        req.on("error", reject);
        req.end("{}");
        req.resume();
      });
      assertEquals(status, "200", authority);
    }
    const t = await createRpcTransport(`127.0.0.1:${server.port}`);
    const info = await createClient(DiscoveryService, t).getClusterInfo({});
    t.close();
    assertEquals(info.clusterName, "c");
  } finally {
    session.close();
    await server.close();
  }
});

/** An InferenceService whose Forward answers each frame's byte count, over both paths. */
function sizedInference() {
  const generated = create(GenerateResponseSchema, { text: "ok" });
  return {
    async *forward(frames: AsyncIterable<{ data: Uint8Array }>) {
      for await (const f of frames) {
        yield create(ForwardResponseSchema, { computeMs: f.data.byteLength });
      }
    },
    async *generate() {
      yield generated;
    },
    cancel: () => ({ cancelled: false }),
    // Generate's raw version: plain gRPC calls take the lean server-stream path.
    [RAW_SERVER_STREAMS]: {
      async *generate() {
        yield grpcEnvelope(toBinary(GenerateResponseSchema, generated));
      },
    },
  };
}

Deno.test("only Forward takes large messages: any other method refuses one over 16 MiB, naming the bound", async () => {
  const server = await startRpcServer({
    port: 0,
    routes: (r) => r.service(InferenceService, sizedInference() as never),
  });
  const big = "x".repeat(DEFAULT_MAX_REQUEST_BYTES + 1024);
  try {
    // gRPC takes the lean paths (Forward, Generate's raw version); Connect its own.
    for (const protocol of ["grpc", "connect"] as RpcProtocol[]) {
      const t = await createRpcTransport(`127.0.0.1:${server.port}`, { protocol, gzip: false });
      const client = createClient(InferenceService, t);
      try {
        for (
          const [name, call] of [
            ["Cancel", () => client.cancel({ requestId: big })],
            ["Generate", async () => {
              for await (const _ of client.generate({ prompt: big }));
            }],
          ] as const
        ) {
          const e = await call().then(() => null, (e) => e);
          assert(e instanceof ConnectError, `${protocol} ${name}: ${e}`);
          assertEquals(e.code, Code.ResourceExhausted, `${protocol} ${name}: ${e.message}`);
          assert(e.rawMessage.includes(String(DEFAULT_MAX_REQUEST_BYTES)), e.rawMessage);
        }
        // An activation frame as large still passes.
        const frames = (async function* () {
          yield create(ActivationFrameSchema, { data: new Uint8Array(big.length) });
        })();
        const answers = [];
        for await (const a of client.forward(frames)) answers.push(a.computeMs);
        assertEquals(answers, [big.length], protocol);
      } finally {
        t.close();
      }
    }
  } finally {
    await server.close();
  }
});

Deno.test("an unknown service or method over gRPC is UNIMPLEMENTED in a trailers-only answer, not a bare 404", async () => {
  const { server } = await startTestAgent();
  const empty = enveloped(new Uint8Array());
  try {
    for (
      const [path, message] of [
        [
          "/distributed_llm.v1.NoSuchService/Get",
          "unknown service distributed_llm.v1.NoSuchService",
        ],
        [
          "/distributed_llm.v1.NodeService/NoSuchMethod",
          "unknown method NoSuchMethod for service distributed_llm.v1.NodeService",
        ],
      ]
    ) {
      for (
        const type of ["application/grpc", "application/grpc+proto", "application/grpc-web+proto"]
      ) {
        const r = await rawCall(server.port, path, empty, { headers: { "content-type": type } });
        assertEquals([r.httpStatus, r.grpcStatus, r.grpcMessage], [200, "12", message], type);
        assertEquals(r.headers["grpc-status"], "12", "trailers-only: the status is in the headers");
      }
    }
    // Connect's protocol says 404 for an unknown procedure.
    const r = await rawCall(server.port, "/distributed_llm.v1.NodeService/NoSuchMethod", empty, {
      headers: { "content-type": "application/proto" },
    });
    assertEquals([r.httpStatus, r.grpcStatus], [404, undefined]);
  } finally {
    await server.close();
  }
});

Deno.test("a request in an encoding not taken is UNIMPLEMENTED and told the ones taken (grpc-accept-encoding)", async () => {
  const { server } = await startTestAgent();
  try {
    const r = await rawCall(
      server.port,
      "/distributed_llm.v1.NodeService/HealthCheck",
      enveloped(new Uint8Array()),
      { headers: { "grpc-encoding": "br" } },
    );
    assertEquals(r.grpcStatus, "12", r.grpcMessage);
    assertEquals(r.headers["grpc-accept-encoding"], "gzip");
  } finally {
    await server.close();
  }
});

Deno.test("Prepare takes a manifest over 16 MiB (a model past ~480 GB); GetManifest's request does not", async () => {
  const server = await startRpcServer({
    port: 0,
    routes: (r) =>
      r.service(TransferService, {
        prepare: (req: { manifest?: { manifest: Uint8Array } }) => ({
          progress: { nodeId: String(req.manifest?.manifest.length ?? 0) },
        }),
        getManifest: () => ({}),
      } as never),
  });
  const t = await createRpcTransport(`127.0.0.1:${server.port}`, { gzip: false });
  const client = createClient(TransferService, t);
  try {
    const bytes = new Uint8Array(DEFAULT_MAX_REQUEST_BYTES + 4096);
    // A 600 GB model's manifest is ~21 MB: before, Prepare refused it and the deploy failed.
    const r = await client.prepare({ manifest: { manifest: bytes } });
    assertEquals(r.progress?.nodeId, String(bytes.length));
    const e = await client.getManifest({ path: "x".repeat(bytes.length) }).then(
      () => null,
      (e) => e,
    );
    assert(e instanceof ConnectError && e.code === Code.ResourceExhausted, String(e));
  } finally {
    t.close();
    await server.close();
  }
});

Deno.test("explainRpcError: an HTTP/1.1 server (the API's port, taken for the RPC port) is named as a likely wrong port", async () => {
  const http = await import("node:http");
  const srv = http.createServer((_req, res) => res.end("ok"));
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as { port: number }).port;
  const t = await createRpcTransport(`127.0.0.1:${port}`);
  try {
    const e = await assertRejects(() => createClient(NodeService, t).healthCheck({}), ConnectError);
    const text = explainRpcError(e, `127.0.0.1:${port}`);
    // Before, "Internal: Protocol error" alone.
    assert(text.includes("does not speak gRPC") && text.includes("is that its RPC port"), text);
  } finally {
    t.close();
    await new Promise((r) => srv.close(r));
  }
  // A server that hangs up on the preface: before, only "if it runs with mutual TLS, pass
  // --tls-…", which sent users the wrong way.
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const hangUp = (async () => {
    for await (const c of l) c.close();
  })();
  const t2 = await createRpcTransport(`127.0.0.1:${(l.addr as Deno.NetAddr).port}`);
  try {
    const e = await assertRejects(
      () => createClient(NodeService, t2).healthCheck({}),
      ConnectError,
    );
    const text = explainRpcError(e, "h:1");
    assert(text.includes("is that its RPC port") && text.includes("--tls-ca"), text);
  } finally {
    t2.close();
    l.close();
    await hangUp.catch(() => {});
  }
});

Deno.test("explainRpcError: a server that hangs up before the TLS handshake is named as a likely wrong port, not a certificate problem", async () => {
  const certs = await makeCerts();
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const hangUp = (async () => {
    for await (const c of l) c.close();
  })();
  const t = await createRpcTransport(`127.0.0.1:${(l.addr as Deno.NetAddr).port}`, {
    tls: certs.client,
  });
  try {
    const e = await assertRejects(() => createClient(NodeService, t).healthCheck({}), ConnectError);
    const text = explainRpcError(e, "h:1", { tls: true });
    // Before: "check --tls-ca/--tls-cert/--tls-key: both sides need certificates from the
    // same CA", for a connection on which no certificate was ever exchanged.
    assert(text.includes("is that its RPC port") && !text.includes("same CA"), text);
  } finally {
    t.close();
    l.close();
    await hangUp.catch(() => {});
    await Deno.remove(certs.dir, { recursive: true });
  }
});

Deno.test("explainRpcError: an agent that ends a stream as it shuts down is not called a wrong port", () => {
  // As a StreamUpdates viewer sees an agent's shutdown (found by review: the wrong-port hint
  // fired on every closed stream).
  const e = new ConnectError("http/2 stream closed with error code CANCEL (0x8)", Code.Canceled);
  const text = explainRpcError(e, "h:1");
  assert(text.includes("shutting down") && !text.includes("RPC port"), text);
});

Deno.test("an HTTP/1.1 answer on the plaintext port says it closes the connection, as it does", async () => {
  // The port hands a connection to its HTTP/1.1 server by emit("connection"), which under Deno
  // 2.9 answers no second request on it: the answer promised keep-alive, then the server closed,
  // and a client's next POST on that connection could meet the close.
  const { server } = await startTestAgent();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  try {
    const body = "{}";
    await conn.write(new TextEncoder().encode(
      "POST /distributed_llm.v1.NodeService/HealthCheck HTTP/1.1\r\nhost: x\r\n" +
        `content-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
    ));
    let text = "";
    const buf = new Uint8Array(4096);
    for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) {
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    assert(text.startsWith("HTTP/1.1 200"), text);
    assert(/\r\nconnection: close\r\n/i.test(text), text);
    assert(!/keep-alive/i.test(text), text);
  } finally {
    conn.close();
    await server.close();
  }
});

Deno.test("HTTP/2 connections are told how many streams they may open at once", async () => {
  // No limit was announced: 60 000 streams opened on one connection took 1.2 GB and stalled
  // the agent until gossip declared it dead.
  const server = await startRpcServer({ port: 0, routes: () => {} });
  const session = http2.connect(`http://127.0.0.1:${server.port}`);
  try {
    const settings = await new Promise<http2.Settings>((resolve, reject) => {
      session.once("remoteSettings", resolve);
      session.once("error", reject);
    });
    assertEquals(settings.maxConcurrentStreams, MAX_CONCURRENT_STREAMS);
  } finally {
    session.close();
    await server.close();
  }
});

Deno.test("a call whose request never arrives whole is cut off after the request timeout", async () => {
  // HEADERS without END_STREAM: the call held its connection for good (1024 of them shut the
  // RPC port); a bidirectional Forward stream is not bounded so.
  const server = await startRpcServer({
    port: 0,
    routes: (r) => r.service(Health, grpcHealthService(() => HealthStatus.SERVING)),
    requestTimeoutMs: 300,
  });
  const session = http2.connect(`http://127.0.0.1:${server.port}`);
  session.on("error", () => {});
  try {
    const stream = session.request({
      ":method": "POST",
      ":path": "/grpc.health.v1.Health/Check",
      "content-type": "application/grpc",
      te: "trailers",
    }, { endStream: false });
    stream.on("error", () => {});
    const t0 = performance.now();
    const closed = await Promise.race([
      new Promise<boolean>((resolve) => stream.once("close", () => resolve(true))),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 3_000)),
    ]);
    assert(closed, "the call still held its stream after 3 s");
    assert(performance.now() - t0 >= 250, "cut off before the request timeout");
  } finally {
    session.close();
    await server.close();
  }
});

Deno.test("the RPC server closes connections without a GOAWAY: idle ones, and all at its close", async () => {
  // A GOAWAY reaching a client whose session held closed streams (a deploying agent's transfer
  // connection, when a peer stopped) aborted that agent: Deno's nghttp2 assertion
  // find_stream_on_goaway_func. The server now closes sockets; a client's next call reconnects.
  for (const how of ["idle", "close"] as const) {
    const server = await startRpcServer({
      port: 0,
      routes: (r) => r.service(Health, grpcHealthService(() => HealthStatus.SERVING)),
      limits: how === "idle" ? { idleMs: 200 } : {},
    });
    const session = http2.connect(`http://127.0.0.1:${server.port}`);
    session.on("error", () => {});
    let goaways = 0;
    session.on("goaway", () => goaways++);
    try {
      const call = session.request({
        ":method": "POST",
        ":path": "/grpc.health.v1.Health/Check",
        "content-type": "application/grpc",
        te: "trailers",
      });
      call.on("error", () => {});
      call.end(new Uint8Array([0, 0, 0, 0, 0]));
      await new Promise<void>((resolve) => {
        call.on("data", () => {});
        call.once("close", () => resolve());
      });
      const closed = new Promise<void>((resolve) => session.once("close", () => resolve()));
      if (how === "close") await server.close();
      await Promise.race([closed, new Promise((r) => setTimeout(r, 3000))]);
      assert(session.closed || session.destroyed, `${how}: the connection is still open`);
      assertEquals(goaways, 0, `${how}: a GOAWAY was sent`);
    } finally {
      session.destroy();
      await server.close();
    }
  }
});
