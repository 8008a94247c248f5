/**
 * Agents with mutual TLS: the pipeline runs over mTLS between agents, llmctl-style clients need
 * a certificate from the cluster CA, and an independent gRPC client (grpc-js under Node.js)
 * calls GetClusterInfo and HealthCheck on a real agent over mTLS and over plain h2c.
 */
import { createClient } from "@connectrpc/connect";
import { createRpcTransport } from "../../cluster/rpc/mod.ts";
import { initCertificates } from "../../cluster/tls/mod.ts";
import { DiscoveryService, InferenceService } from "../../proto/mod.ts";
import { startLocalCluster, stopLocalAgents, waitForPlacement } from "../../cli/local_cluster.ts";
import { assert, assertEquals } from "../support/assert.ts";
import { ensureClientPackages, runClient } from "../support/interop.ts";
import { FIXTURES, STORIES } from "../support/paths.ts";
import { agentTlsFlags } from "../support/agents.ts";

const golden = JSON.parse(Deno.readTextFileSync(`${FIXTURES}/golden/stories260K__once.json`));
const COMMON = [
  "--model",
  STORIES,
  "--memory-budget",
  "1.2MB",
  "--context-size",
  "256",
  "--max-sessions",
  "8",
  "--gossip-preset",
  "local",
  "--backend",
  "reference",
];

Deno.test({
  name: "mTLS cluster: pipeline over mTLS, clients need a CA-signed certificate, grpc-js interop",
  fn: async () => {
    await ensureClientPackages();
    const dir = await Deno.makeTempDir({ prefix: "dllm-mtls-" });
    await initCertificates({ dir, nodes: ["a", "b", "c"] });
    // Each agent presents its own certificate: start them one by one with their own flags. b and
    // c listen on addresses their certificates do not list (as pod IPs are not): peers check
    // their certificates against their node ids.
    const { startLocalAgent } = await import("../../cli/local_cluster.ts");
    const a = await startLocalAgent({ id: "a", args: [...COMMON, ...agentTlsFlags(dir, "a")] });
    const rest = await Promise.all(
      [["b", "127.0.0.2"], ["c", "127.0.0.3"]].map(([id, bind]) =>
        startLocalAgent({
          id,
          seeds: [a.gossipAddr],
          args: [...COMMON, ...agentTlsFlags(dir, id), "--bind", bind],
        })
      ),
    );
    const agents = [a, ...rest];
    const client = { cert: `${dir}/llmctl.crt`, key: `${dir}/llmctl.key`, ca: `${dir}/ca.crt` };
    const transport = await createRpcTransport(`127.0.0.1:${a.rpcPort}`, { tls: client });
    try {
      const info = await waitForPlacement(transport, 3);
      assertEquals(info.placement!.stages.length, 3);
      // Under mTLS activations stay on gRPC: no stage offers a plaintext data plane.
      assertEquals(info.placement!.stages.map((s) => s.dataEndpoint), ["", "", ""]);
      const tokens: number[] = [];
      for await (
        const m of createClient(InferenceService, transport).generate({
          prompt: golden.prompt,
          maxTokens: 32,
          sampler: { temperature: 0 },
        })
      ) {
        if (!m.finishReason) tokens.push(m.tokenId);
      }
      assertEquals(tokens, golden.greedy_ids.slice(0, 32), "generation over mTLS between 3 agents");

      const ok = await runClient(`127.0.0.1:${a.rpcPort}`, client);
      assert(ok.ok, `grpc-js over mTLS failed: ${ok.code} ${ok.details}`);
      assertEquals(ok.clusterInfo!.nodes.map((n) => n.id).sort(), ["a", "b", "c"]);
      assertEquals(ok.health!.status, "SERVING_STATUS_SERVING");
      const refused = await runClient(`127.0.0.1:${a.rpcPort}`, { ca: `${dir}/ca.crt` });
      assert(!refused.ok, "a client without a certificate got an answer");
    } finally {
      transport.close();
      await stopLocalAgents(agents);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "grpc-js under Node.js talks plain h2c to a real agent without TLS",
  fn: async () => {
    await ensureClientPackages();
    const agents = await startLocalCluster(["solo"], {
      args: COMMON.map((x) => x === "1.2MB" ? "8MB" : x),
    });
    try {
      const r = await runClient(`127.0.0.1:${agents[0].rpcPort}`, null);
      assert(r.ok, `grpc-js h2c failed: ${r.code} ${r.details}`);
      assertEquals(r.clusterInfo!.responderId, "solo");
      assertEquals(r.health!.nodeId, "solo");
    } finally {
      await stopLocalAgents(agents);
    }
  },
});

Deno.test({
  name:
    "a member whose certificate comes from another CA is placed around like a dead one, and the log says why",
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "dllm-rogue-" });
    await initCertificates({ dir: `${dir}/ours`, nodes: ["a", "b"] });
    await initCertificates({ dir: `${dir}/theirs`, nodes: ["c"] });
    // Budgets that let a and b hold the model together once c is left out.
    const args = (d: string, id: string) => [
      ...COMMON,
      ...agentTlsFlags(`${dir}/${d}`, id),
      ...["--memory-budget", "1.6MB"],
    ];
    const { startLocalAgent } = await import("../../cli/local_cluster.ts");
    const a = await startLocalAgent({ id: "a", args: args("ours", "a") });
    const agents = [a];
    const client = {
      cert: `${dir}/ours/llmctl.crt`,
      key: `${dir}/ours/llmctl.key`,
      ca: `${dir}/ours/ca.crt`,
    };
    const transport = await createRpcTransport(`127.0.0.1:${a.rpcPort}`, { tls: client });
    try {
      agents.push(
        await startLocalAgent({ id: "b", seeds: [a.gossipAddr], args: args("ours", "b") }),
        await startLocalAgent({ id: "c", seeds: [a.gossipAddr], args: args("theirs", "c") }),
      );
      // Gossip (no keys here) lets c join; only RPC refuses it, and a and b plan without it.
      const discovery = createClient(DiscoveryService, transport);
      const deadline = Date.now() + 30_000;
      let on: string[] = [];
      while (Date.now() < deadline) {
        const info = await discovery.getClusterInfo({});
        on = (info.placement?.stages ?? []).map((s) => s.nodeId);
        if (info.nodes.length === 3 && on.length === 2 && !on.includes("c")) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assertEquals(on.sort(), ["a", "b"], "c's layers are placed on a and b");
      const tokens: number[] = [];
      for await (
        const m of createClient(InferenceService, transport).generate({
          prompt: golden.prompt,
          maxTokens: 16,
          sampler: { temperature: 0 },
        })
      ) if (!m.finishReason) tokens.push(m.tokenId);
      assertEquals(tokens, golden.greedy_ids.slice(0, 16), "a and b serve around c");
      assert(
        a.logs.some((l) =>
          l.msg === "member refused by TLS; its layers are placed elsewhere" && l.node === "c" &&
          /certificate/.test(String(l.error))
        ),
        "the head's log does not name c and the TLS cause",
      );
      // The head is still up and serving.
      const info = await discovery.getClusterInfo({});
      assertEquals(info.responderId, "a");
    } finally {
      transport.close();
      // Throws when any agent printed an unhandled rejection (the head used to die of one).
      await stopLocalAgents(agents);
      await Deno.remove(dir, { recursive: true });
    }
  },
});
