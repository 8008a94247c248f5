/** Stages behind real RPC servers on loopback (in this process): the wire path of the pipeline. */
import { createReferenceBackend } from "../../../kernels/reference/mod.ts";
import { openGGUF } from "../../../model/gguf/mod.ts";
import { LlamaStage } from "../../../model/llama.ts";
import {
  type ChainHop,
  forwardHandler,
  Head,
  RemoteStageLink,
  StageHost,
  type StageLink,
  StageLinkError,
  StaleEpochError,
} from "../../../cluster/pipeline/mod.ts";

import { initCertificates } from "../../../cluster/tls/mod.ts";
import {
  createRpcTransport,
  type RpcProtocol,
  type RpcServer,
  type RpcTransport,
  startRpcServer,
} from "../../../cluster/rpc/mod.ts";
import { Dtype, InferenceService } from "../../../proto/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";
import { FIXTURES } from "../../support/paths.ts";

const GOLDEN = JSON.parse(await Deno.readTextFile(`${FIXTURES}/golden/stories260K__once.json`));

/** Real stages behind RPC servers; stage n<i> reaches n<i+1> over its own transport. */
async function serveStages(
  ranges: [number, number][],
  dtype = Dtype.F32,
  epochs?: bigint[],
  protocol: RpcProtocol = "grpc",
) {
  const file = await openGGUF(`${FIXTURES}/models/stories260K.gguf`);
  const servers: RpcServer[] = [];
  const hosts: StageHost[] = [];
  const transports = new Map<string, RpcTransport>();
  const linkTo = (hop: ChainHop): StageLink =>
    new RemoteStageLink(hop.nodeId, hop.from, hop.to, transports.get(hop.nodeId)!, { dtype });
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
            forward: forwardHandler({
              nodeId: `n${servers.length}`,
              host: () => host,
              epoch: ((e) => () => e)(epochs?.[servers.length] ?? 1n),
              linkTo,
            }),
          }),
      }),
    );
  }
  file.close();
  for (const [i, srv] of servers.entries()) {
    transports.set(
      `n${i}`,
      await createRpcTransport(`127.0.0.1:${srv.port}`, { gzip: false, protocol }),
    );
  }
  const close = async () => {
    for (const t of transports.values()) t.close();
    await Promise.all(servers.map((s) => s.close(100)));
  };
  return { servers, hosts, linkTo, close };
}

// gRPC takes the lean path for Forward (cluster/rpc/grpc_stream.ts) at both ends; the Connect
// protocol goes through Connect's client and handler, which must give the same ids.
for (
  const [dtype, protocol] of [
    [Dtype.F32, "grpc"],
    [Dtype.F16, "grpc"],
    [Dtype.F32, "connect"],
  ] as [Dtype, RpcProtocol][]
) {
  Deno.test(`three stages over ${protocol} on loopback (${Dtype[dtype]} activations)`, async () => {
    const ranges: [number, number][] = [[0, 2], [2, 4], [4, 5]];
    const { hosts, linkTo, close } = await serveStages(ranges, dtype, undefined, protocol);
    try {
      const links: StageLink[] = hosts.map((h, i) =>
        linkTo({ nodeId: `n${i}`, from: h.range.from, to: h.range.to })
      );
      const head = new Head({ chain: () => Promise.resolve(links), epoch: () => 1n });
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
      await close();
    }
  });
}

Deno.test("a stage on another placement epoch refuses the session at its hop, by name", async () => {
  // n0 agrees with the head (epoch 7); n1, further down, plans with epoch 1.
  const { hosts, linkTo, close } = await serveStages([[0, 2], [2, 5]], Dtype.F32, [7n, 1n]);
  try {
    const links = hosts.map((h, i) =>
      linkTo({ nodeId: `n${i}`, from: h.range.from, to: h.range.to })
    );
    const first = links[0];
    const e = await first.openSession({
      sessionId: "stale",
      maxContext: 64,
      model: "stories260K",
      epoch: 7n,
      sampling: { temperature: 0 },
      downstream: [{ nodeId: "n1", from: 2, to: 5 }],
    }).then(() => null, (e) => e);
    assert(e instanceof StaleEpochError, `expected StaleEpochError, got ${e}`);
    assertEquals(e.nodeId, "n1");
    assert(/n1 plans with placement epoch 1, the session with 7/.test(e.message), e.message);
    await new Promise((r) => setTimeout(r, 50));
    for (const h of hosts) assertEquals(h.openSessions, 0, "nothing stays open");
  } finally {
    await close();
  }
});

Deno.test("a broken hop further down the chain is reported with the failing stage's name", async () => {
  const { hosts, linkTo, servers, close } = await serveStages([[0, 2], [2, 4], [4, 5]]);
  try {
    const head = new Head({
      chain: () =>
        Promise.resolve(
          hosts.map((h, i) => linkTo({ nodeId: `n${i}`, from: h.range.from, to: h.range.to })),
        ),
    }, { maxRecoveries: 0 });
    let n = 0;
    const e = await head.generate({
      requestId: "broken",
      promptTokens: GOLDEN.prompt_tokens,
      maxTokens: 32,
      sampling: { temperature: 0 },
      isEog: () => false,
      maxContext: 256,
      // The tail's server goes away after 4 tokens: n1's stream to it breaks.
      onToken: () => {
        if (++n === 4) servers[2].close(0);
      },
    }).then(() => null, (e) => e);
    assert(e, "the generation should fail without a replacement");
    assert(/n2/.test(e.message), `the failure names n2: ${e.message}`);
  } finally {
    await close();
  }
});

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
    const link = new RemoteStageLink("rogue", 0, 5, transport);
    // The handshake fails when the session opens: a stage failure naming the stage, so the head
    // re-places its layers like a dead one's (nothing escapes as an unhandled rejection).
    const e = await link.openSession({
      sessionId: "s",
      maxContext: 16,
      model: "m",
      epoch: 0n,
      downstream: [],
    }).then(() => null, (e) => e);
    assert(e instanceof StageLinkError, `expected StageLinkError, got ${e}`);
    assertEquals(e.nodeId, "rogue");
    assert(/certificate/.test(e.message), e.message);
  } finally {
    transport.close();
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});
