/** Stages behind real RPC servers on loopback (in this process): the wire path of the pipeline. */
import { createReferenceBackend } from "../../../kernels/reference/mod.ts";
import { openGGUF } from "../../../model/gguf/mod.ts";
import { LlamaStage } from "../../../model/llama.ts";
import {
  forwardHandler,
  Head,
  RemoteStageLink,
  StageHost,
  type StageLink,
  StageLinkError,
} from "../../../cluster/pipeline/mod.ts";
import { initCertificates } from "../../../cluster/tls/mod.ts";
import { createRpcTransport, type RpcServer, startRpcServer } from "../../../cluster/rpc/mod.ts";
import { Dtype, InferenceService } from "../../../proto/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";
import { FIXTURES } from "../../support/paths.ts";

const GOLDEN = JSON.parse(await Deno.readTextFile(`${FIXTURES}/golden/stories260K__once.json`));

async function serveStages(ranges: [number, number][]) {
  const file = await openGGUF(`${FIXTURES}/models/stories260K.gguf`);
  const servers: RpcServer[] = [];
  const hosts: StageHost[] = [];
  for (const [from, to] of ranges) {
    const host = new StageHost(
      await LlamaStage.load(file, createReferenceBackend(), { from, to }),
      "stories260K",
    );
    hosts.push(host);
    servers.push(
      await startRpcServer({
        port: 0,
        routes: (r) =>
          r.service(InferenceService, {
            forward: forwardHandler({ host: () => host, epoch: () => 1n }),
          }),
      }),
    );
  }
  file.close();
  return { servers, hosts };
}

for (const dtype of [Dtype.F32, Dtype.F16]) {
  Deno.test(`three stages over gRPC on loopback (${Dtype[dtype]} activations)`, async () => {
    const { servers, hosts } = await serveStages([[0, 2], [2, 4], [4, 5]]);
    const transports = await Promise.all(
      servers.map((s) => createRpcTransport(`127.0.0.1:${s.port}`)),
    );
    try {
      const links: StageLink[] = servers.map((_, i) =>
        new RemoteStageLink(`n${i}`, hosts[i].range.from, hosts[i].range.to, transports[i], {
          model: "stories260K",
          epoch: 1n,
          dtype,
        })
      );
      const head = new Head({ chain: () => Promise.resolve(links) });
      const r = await head.generate({
        requestId: "x",
        promptTokens: GOLDEN.prompt_tokens,
        maxTokens: 32,
        sampling: { temperature: 0 },
        isEog: () => false,
        maxContext: 256,
      });
      // f32 activations are exact; f16 halves the bytes and still gives the golden on this model
      // (its greedy margins are wide), which is what makes --activation-dtype f16 usable.
      assertEquals(r.tokens.map((t) => t.id), GOLDEN.greedy_ids.slice(0, 32));
      // Sessions are freed on every stage once the request ends.
      await new Promise((res) => setTimeout(res, 50));
      for (const h of hosts) assertEquals(h.openSessions, 0);
    } finally {
      for (const t of transports) t.close();
      await Promise.all(servers.map((s) => s.close(100)));
    }
  });
}

Deno.test("decodeValues copies views at any offset (Node Buffers from gzip are pooled views)", async () => {
  const { Buffer } = await import("node:buffer");
  const pool = Buffer.alloc(64);
  const view = pool.subarray(4, 12); // 2 floats at byte offset 4
  new DataView(pool.buffer, pool.byteOffset).setFloat32(4, 1.5, true);
  new DataView(pool.buffer, pool.byteOffset).setFloat32(8, -2, true);
  const { decodeValues } = await import("../../../cluster/pipeline/mod.ts");
  assertEquals(Array.from(decodeValues(view, [2], Dtype.F32)), [1.5, -2]);
});

Deno.test("a stage whose certificate comes from another CA fails the step, nothing escapes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dllm-rogue-ca-" });
  await initCertificates({ dir: `${dir}/ours`, nodes: ["head"] });
  await initCertificates({ dir: `${dir}/theirs`, nodes: ["rogue"] });
  const files = (d: string, id: string) => ({
    cert: `${dir}/${d}/${id}.crt`,
    key: `${dir}/${d}/${id}.key`,
    ca: `${dir}/${d}/ca.crt`,
  });
  const server = await startRpcServer({ port: 0, tls: files("theirs", "rogue"), routes: () => {} });
  const transport = await createRpcTransport(`127.0.0.1:${server.port}`, {
    tls: files("ours", "head"),
  });
  try {
    const link = new RemoteStageLink("rogue", 0, 5, transport, { model: "m", epoch: 1n });
    const session = await link.openSession("s", 16);
    // The handshake fails before anyone asks for an answer: that rejection used to escape
    // (Deno's test runner fails a test on any unhandled rejection).
    await new Promise((r) => setTimeout(r, 500));
    const e = await session.step({ tokens: Int32Array.from([1]) }).then(() => null, (e) => e);
    assert(e instanceof StageLinkError, `expected StageLinkError, got ${e}`);
    assert(/certificate/.test(e.message), e.message);
    await session.close("done");
  } finally {
    transport.close();
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});
