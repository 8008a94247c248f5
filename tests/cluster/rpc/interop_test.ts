/**
 * Interop: an independent gRPC client (@grpc/grpc-js + @grpc/proto-loader under Node.js,
 * tests/interop/client.mjs) calls DiscoveryService.GetClusterInfo and NodeService.HealthCheck
 * on our server over plain h2c and over mutual TLS with certificates from our own PKI; without
 * a client certificate it is refused.
 *
 * Needs `node` and `npm`; the client's packages are installed once into .cache/interop/
 * (git-ignored) from tests/interop/package-lock.json.
 */
import { initCertificates } from "../../../cluster/tls/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";
import { makeCerts, startTestAgent } from "./fixtures.ts";
import { type ClientResult, ensureClientPackages, runClient } from "../../support/interop.ts";

function checkAnswers(r: ClientResult) {
  assert(r.ok, `grpc-js call failed: code ${r.code}: ${r.details}`);
  assertEquals(r.clusterInfo!.clusterName, "test");
  assertEquals(r.clusterInfo!.responderId, "a");
  assertEquals(r.clusterInfo!.nodes.map((n) => `${n.id}:${n.state}`), [
    "a:NODE_STATE_ALIVE",
    "b:NODE_STATE_ALIVE",
    "c:NODE_STATE_SUSPECT",
  ]);
  assertEquals(r.health!.status, "SERVING_STATUS_SERVING");
  assertEquals(r.health!.nodeId, "a");
}

Deno.test("grpc-js under Node.js calls GetClusterInfo and HealthCheck over h2c and mTLS", async (t) => {
  await ensureClientPackages();

  await t.step("plain h2c", async () => {
    const { server } = await startTestAgent();
    try {
      checkAnswers(await runClient(`127.0.0.1:${server.port}`, null));
    } finally {
      await server.close();
    }
  });

  const certs = await makeCerts();
  const { server } = await startTestAgent({ tls: certs.node });
  try {
    await t.step("mutual TLS with the llmctl certificate", async () => {
      checkAnswers(await runClient(`127.0.0.1:${server.port}`, certs.client));
    });
    await t.step("by DNS name (localhost is in every node certificate)", async () => {
      checkAnswers(await runClient(`localhost:${server.port}`, certs.client));
    });
    await t.step("without a client certificate: refused", async () => {
      const r = await runClient(`127.0.0.1:${server.port}`, { ca: certs.client.ca });
      assert(!r.ok, "a client without a certificate got an answer");
      assertEquals(r.code, 14, `expected UNAVAILABLE (14), got ${r.code}: ${r.details}`);
    });
    await t.step("with a certificate from another CA: refused", async () => {
      const other = await Deno.makeTempDir({ prefix: "dllm-other-ca-" });
      try {
        await initCertificates({ dir: other, nodes: ["x"] });
        const r = await runClient(`127.0.0.1:${server.port}`, {
          ca: certs.client.ca,
          cert: `${other}/x.crt`,
          key: `${other}/x.key`,
        });
        assert(!r.ok, "a client with a foreign certificate got an answer");
      } finally {
        await Deno.remove(other, { recursive: true });
      }
    });
  } finally {
    await server.close();
    await Deno.remove(certs.dir, { recursive: true });
  }
});
