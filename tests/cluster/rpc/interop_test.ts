/**
 * Interop: an independent gRPC client (@grpc/grpc-js + @grpc/proto-loader under Node.js,
 * tests/interop/client.mjs) calls DiscoveryService.GetClusterInfo and NodeService.HealthCheck
 * on our server over plain h2c and over mutual TLS with certificates from our own PKI; without
 * a client certificate it is refused.
 *
 * Needs `node` and `npm`; the client's packages are installed once into .cache/interop/
 * (git-ignored) from tests/interop/package-lock.json.
 */
import { fileURLToPath } from "node:url";
import { initCertificates } from "../../../cluster/tls/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";
import { makeCerts, startTestAgent } from "./fixtures.ts";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url)).replace(/\/$/, "");
const INTEROP = `${ROOT}/tests/interop`;
const MODULES = `${ROOT}/.cache/interop`;

async function sh(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  try {
    const o = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
    const dec = new TextDecoder();
    return { code: o.code, out: dec.decode(o.stdout) + dec.decode(o.stderr) };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(`"${cmd}" is not installed; the gRPC interop test needs Node.js and npm`);
    }
    throw e;
  }
}

/** Install grpc-js + proto-loader into .cache/interop unless the same lock file is there. */
async function ensureClientPackages(): Promise<void> {
  const lock = await Deno.readTextFile(`${INTEROP}/package-lock.json`);
  const installed = await Deno.readTextFile(`${MODULES}/package-lock.json`).catch(() => "");
  const present = await Deno.stat(`${MODULES}/node_modules/@grpc/grpc-js/package.json`).then(
    () => true,
    () => false,
  );
  if (installed === lock && present) return;
  await Deno.mkdir(MODULES, { recursive: true });
  await Deno.copyFile(`${INTEROP}/package.json`, `${MODULES}/package.json`);
  await Deno.copyFile(`${INTEROP}/package-lock.json`, `${MODULES}/package-lock.json`);
  const r = await sh("npm", ["ci", "--no-audit", "--no-fund", "--prefix", MODULES]);
  if (r.code !== 0) throw new Error(`npm ci for the interop client failed:\n${r.out}`);
}

interface ClientResult {
  ok: boolean;
  code?: number;
  details?: string;
  clusterInfo?: {
    clusterName: string;
    responderId: string;
    nodes: { id: string; state: string }[];
  };
  health?: { status: string; nodeId: string; state: string };
}

async function runClient(
  target: string,
  tls: { ca: string; cert?: string; key?: string } | null,
): Promise<ClientResult> {
  const cfg = { modules: MODULES, protoDir: `${ROOT}/proto`, target, tls };
  const r = await sh("node", [`${INTEROP}/client.mjs`, JSON.stringify(cfg)]);
  const line = r.out.trim().split("\n").findLast((l) => l.startsWith("{"));
  if (!line) throw new Error(`interop client printed no result (exit ${r.code}):\n${r.out}`);
  return JSON.parse(line);
}

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
