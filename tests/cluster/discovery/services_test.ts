import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type HandlerContext } from "@connectrpc/connect";
import {
  clusterMetrics,
  measureResources,
  MetricsSampler,
  nodeInfo,
  type NodeInfoInit,
  nodeService,
  StaticMembership,
} from "../../../cluster/discovery/mod.ts";
import { createRpcTransport, RpcFailure } from "../../../cluster/rpc/mod.ts";
import {
  DiscoveryService,
  HealthCheckResponse_ServingStatus,
  NodeMetricsSchema,
  NodeService,
  NodeState,
  PlacementSchema,
} from "../../../proto/mod.ts";
import { assert, assertEquals, assertRejects } from "../../support/assert.ts";
import { startTestAgent, testMembership } from "../rpc/fixtures.ts";

async function withAgent(
  fn: (clients: {
    discovery: ReturnType<typeof createClient<typeof DiscoveryService>>;
    node: ReturnType<typeof createClient<typeof NodeService>>;
    view: StaticMembership;
  }) => Promise<void>,
  view?: StaticMembership,
) {
  const agent = await startTestAgent({ view });
  const t = await createRpcTransport(`127.0.0.1:${agent.server.port}`, { protocol: "connect" });
  try {
    await fn({
      discovery: createClient(DiscoveryService, t),
      node: createClient(NodeService, t),
      view: agent.view,
    });
  } finally {
    t.close();
    await agent.server.close();
  }
}

Deno.test("DiscoverNodes: live members by default, filters by state and model", async () => {
  await withAgent(async ({ discovery }) => {
    const live = await discovery.discoverNodes({});
    assertEquals(live.nodes.map((n) => n.id), ["a", "b", "c"]);
    assertEquals(live.responderId, "a");
    const dead = await discovery.discoverNodes({ states: [NodeState.DEAD] });
    assertEquals(dead.nodes.map((n) => n.id), ["d"]);
    const hosting = await discovery.discoverNodes({ model: "stories260K" });
    assertEquals(hosting.nodes.map((n) => `${n.id}:${n.hosted?.fromLayer}-${n.hosted?.toLayer}`), [
      "a:0-3",
      "b:3-5",
    ]);
    assertEquals((await discovery.discoverNodes({ model: "other" })).nodes, []);
  });
});

Deno.test("DiscoverNodes' model filter takes the names Generate takes, not only the full id", async () => {
  const view = testMembership();
  const id = "stories260K.gguf@1185376#3f9a2c61d0e4";
  view.local().hosted!.model = id;
  await withAgent(async ({ discovery }) => {
    // Before, only the full id found node a (b announces the bare name "stories260K").
    for (const model of [id, "stories260K.gguf@1185376", "stories260K.gguf"]) {
      const found = await discovery.discoverNodes({ model });
      assertEquals(found.nodes.map((n) => n.id), ["a"], model);
    }
    const both = await discovery.discoverNodes({ model: "stories260K" });
    assertEquals(both.nodes.map((n) => n.id), ["a", "b"]);
    for (const model of ["stories260", "stories260K.gguf@1", "other.gguf"]) {
      assertEquals((await discovery.discoverNodes({ model })).nodes, [], model);
    }
  }, view);
});

Deno.test("RegisterWithCluster adds the node and answers gossip seeds; bad input is refused", async () => {
  await withAgent(async ({ discovery }) => {
    const res = await discovery.registerWithCluster({
      node: { id: "e", addresses: ["127.0.0.5"], gossipPort: 7946, rpcPort: 7950 },
    });
    assertEquals(res.clusterName, "test");
    assertEquals(res.responder?.id, "a");
    assertEquals(res.gossipSeeds, ["127.0.0.1:7946"]);
    assert(res.members.some((n) => n.id === "e" && n.state === NodeState.ALIVE));

    const same = await assertRejects(
      () => discovery.registerWithCluster({ node: { id: "a", addresses: ["x"], gossipPort: 1 } }),
      ConnectError,
    );
    assertEquals((same as ConnectError).code, Code.AlreadyExists);
    for (
      const [node, field] of [
        [undefined, "needs node"],
        [{ id: "", addresses: ["x"], gossipPort: 1 }, "node.id"],
        [{ id: "f", gossipPort: 1 }, "node.addresses"],
        [{ id: "f", addresses: ["x"] }, "gossip_port"],
        [{ id: "f", addresses: ["x"], gossipPort: 1, rpcPort: 70000 }, "rpc_port"],
      ] as [NodeInfoInit | undefined, string][]
    ) {
      const e = await assertRejects(
        () => discovery.registerWithCluster({ node }),
        ConnectError,
        field,
      );
      assertEquals((e as ConnectError).code, Code.InvalidArgument, field);
    }
  });
});

Deno.test("LeaveCluster: the local node leaves, health turns NOT_SERVING, unknown ids are NOT_FOUND", async () => {
  const reasons: string[] = [];
  const view = testMembership();
  const leaving = new StaticMembership({
    clusterName: view.clusterName,
    local: view.local(),
    peers: view.members().slice(1),
    onLeave: (r) => {
      reasons.push(r);
    },
  });
  await withAgent(async ({ discovery, node }) => {
    assertEquals((await node.healthCheck({})).status, HealthCheckResponse_ServingStatus.SERVING);
    assertEquals((await discovery.leaveCluster({ reason: "maintenance" })).state, NodeState.LEFT);
    assertEquals(reasons, ["maintenance"]);
    const h = await node.healthCheck({});
    assertEquals(h.status, HealthCheckResponse_ServingStatus.NOT_SERVING);
    assertEquals(h.state, NodeState.LEFT);
    assert(h.detail.includes("left"), h.detail);
    const e = await assertRejects(() => discovery.leaveCluster({ nodeId: "nobody" }), ConnectError);
    assertEquals((e as ConnectError).code, Code.NotFound);
  }, leaving);
});

Deno.test("GetClusterInfo: members, totals over alive nodes, placement", async () => {
  const view = testMembership();
  view.setPlacement(create(PlacementSchema, {
    model: "stories260K",
    totalLayers: 5,
    epoch: 3n,
    stages: [
      { nodeId: "a", fromLayer: 0, toLayer: 3, rpcEndpoint: "127.0.0.1:7950" },
      { nodeId: "b", fromLayer: 3, toLayer: 5, rpcEndpoint: "127.0.0.2:7950" },
    ],
  }));
  await withAgent(async ({ discovery }) => {
    const info = await discovery.getClusterInfo({});
    assertEquals(info.nodes.map((n) => n.id), ["a", "b", "c"]);
    assertEquals(info.placement?.epoch, 3n);
    const m = info.metrics!;
    assertEquals([m.nodesTotal, m.nodesAlive, m.nodesSuspect, m.nodesDead], [4, 2, 1, 1]);
    assertEquals(m.layersTotal, 5);
    assertEquals(m.layersPlaced, 5);
    // a's real cores + b's 4.
    assertEquals(m.cpuCoresTotal, navigator.hardwareConcurrency + 4);
    assertEquals(
      m.memoryTotalBytes,
      BigInt(Deno.systemMemoryInfo().total) + (8n << 30n),
    );
    const all = await discovery.getClusterInfo({ includeDeparted: true });
    assertEquals(all.nodes.map((n) => n.id), ["a", "b", "c", "d"]);
  }, view);
});

Deno.test("clusterMetrics: layers of a dead stage are not placed", () => {
  const nodes = [
    nodeInfo({ id: "a", state: NodeState.ALIVE }),
    nodeInfo({ id: "b", state: NodeState.DEAD }),
  ];
  const p = create(PlacementSchema, {
    totalLayers: 10,
    stages: [{ nodeId: "a", fromLayer: 0, toLayer: 6 }, { nodeId: "b", fromLayer: 6, toLayer: 10 }],
  });
  const m = clusterMetrics(nodes, p, { activeRequests: 2, tokensGeneratedTotal: 7 });
  assertEquals([m.layersTotal, m.layersPlaced, m.activeRequests], [10, 6, 2]);
  assertEquals(m.tokensGeneratedTotal, 7n);
});

Deno.test("clusterMetrics: a drained node's budget is not the cluster's; its cores and memory are", () => {
  const resources = (gib: number) => ({
    cpuCores: 2,
    memoryTotalBytes: 8n << 30n,
    memoryBudgetBytes: BigInt(gib) << 30n,
  });
  const m = clusterMetrics([
    nodeInfo({ id: "a", state: NodeState.ALIVE, resources: resources(4) }),
    nodeInfo({ id: "b", state: NodeState.ALIVE, resources: resources(3), drained: true }),
  ]);
  assertEquals(m.memoryBudgetBytes, 4n << 30n);
  assertEquals([m.cpuCoresTotal, m.memoryTotalBytes], [4, 16n << 30n]);
});

Deno.test("GetResources and GetMetrics report this machine, measured", async () => {
  await withAgent(async ({ node }) => {
    const { nodeId, resources } = await node.getResources({});
    assertEquals(nodeId, "a");
    assertEquals(resources!.cpuCores, navigator.hardwareConcurrency);
    assertEquals(resources!.memoryTotalBytes, BigInt(Deno.systemMemoryInfo().total));
    assert(
      resources!.memoryAvailableBytes > 0n &&
        resources!.memoryAvailableBytes <= resources!.memoryTotalBytes,
    );
    const { metrics } = await node.getMetrics({});
    assertEquals(metrics!.nodeId, "a");
    assert(metrics!.cpuPercent >= 0 && metrics!.cpuPercent <= 100, `cpu ${metrics!.cpuPercent}`);
    assert(metrics!.processResidentBytes > 0n);
    assert(metrics!.loadAverage1m >= 0 && metrics!.memoryTotalBytes > 0n);
    const peers = await node.getPeers({});
    assertEquals(peers.peers.map((p) => p.id), ["b", "c"]);
    assertEquals((await node.getPeers({ includeDeparted: true })).peers.map((p) => p.id), [
      "b",
      "c",
      "d",
    ]);
  });
});

Deno.test("StreamMetrics: max_samples at the interval; a client cancel ends the stream", async () => {
  await withAgent(async ({ node }) => {
    const t0 = performance.now();
    const got = [];
    for await (const s of node.streamMetrics({ intervalMs: 100, maxSamples: 3 })) {
      got.push(s.metrics!);
    }
    assertEquals(got.length, 3);
    assert(performance.now() - t0 >= 190, "samples came faster than the interval");
    assert(got[2].timestampUnixMs >= got[0].timestampUnixMs);

    const ac = new AbortController();
    let n = 0;
    try {
      for await (const _ of node.streamMetrics({ intervalMs: 100 }, { signal: ac.signal })) {
        if (++n === 2) ac.abort();
      }
    } catch (e) {
      assertEquals(ConnectError.from(e).code, Code.Canceled);
    }
    assertEquals(n, 2);
  });
});

Deno.test("MetricsSampler: rates from counters; measureResources: budget → max_layers", () => {
  let tokens = 0;
  const s = new MetricsSampler("x", () => ({
    activeSessions: 1,
    activeRequests: 1,
    tokensGeneratedTotal: tokens,
    framesProcessedTotal: 0,
  }), Date.now() - 2000);
  const start = performance.now();
  tokens = 50;
  while (performance.now() - start < 20) { /* let time pass */ }
  const m = s.sample();
  assert(m.tokensPerSecond > 0, `tokens/s ${m.tokensPerSecond}`);
  assertEquals(m.tokensGeneratedTotal, 50n);
  assert(m.uptimeSeconds >= 2);
  const r = measureResources({
    memoryBudgetBytes: 1000,
    bytesPerLayer: () => 300,
    usedLayers: () => 2,
  });
  assertEquals([r.maxLayers, r.usedLayers, r.memoryBudgetBytes], [3, 2, 1000n]);
});

Deno.test("StreamMetrics streams are bounded; a closed one makes room", async () => {
  const impl = nodeService({
    view: testMembership(),
    resources: () => ({}) as never,
    metrics: () => create(NodeMetricsSchema, { nodeId: "a" }),
    maxStreams: 2,
  });
  const stream = impl.streamMetrics as (r: unknown, c: HandlerContext) => AsyncGenerator<unknown>;
  const open = () => {
    const abort = new AbortController();
    const it = stream(
      { intervalMs: 100, maxSamples: 0 },
      { signal: abort.signal } as HandlerContext,
    );
    return { abort, it };
  };
  const a = open();
  const b = open();
  await a.it.next();
  await b.it.next();
  const c = open();
  const err = await assertRejects(() => c.it.next(), RpcFailure);
  assertEquals((err as RpcFailure).rpcCode, "resource_exhausted");
  assert(err.message.includes("at most 2"), err.message);
  a.abort.abort();
  assertEquals((await a.it.next()).done, true);
  const d = open();
  assert((await d.it.next()).value, "a stream again once one closed");
  b.abort.abort();
  d.abort.abort();
  await b.it.next();
  await d.it.next();
});
