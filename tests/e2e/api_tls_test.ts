/**
 * The OpenAI API over HTTPS on an mTLS cluster (`--api-tls-cert`, `--api-tls-key` with the
 * node's own certificate): a serving agent answers its clients over TLS, and a `--no-model`
 * gateway, itself on HTTPS, passes requests on to it over TLS with the cluster CA, as gossip says
 * it must (the check by node id: tests/cluster/agent/forward_tls_test.ts).
 */
import { initCertificates } from "../../cluster/tls/mod.ts";
import { startLocalAgent, stopLocalAgents, waitForPlacement } from "../../cli/local_cluster.ts";
import { createRpcTransport } from "../../cluster/rpc/mod.ts";
import { assert, assertEquals } from "../support/assert.ts";
import { STORIES } from "../support/paths.ts";
import { agentTlsFlags } from "../support/agents.ts";

const COMMON = ["--gossip-preset", "local", "--backend", "reference", "--context-size", "256"];

Deno.test({
  name: "HTTPS API on an mTLS cluster: served over TLS, and forwarded over TLS by a gateway",
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "dllm-api-tls-" });
    await initCertificates({ dir, nodes: ["srv", "gw"] });
    const tls = (id: string) => [
      ...agentTlsFlags(dir, id),
      "--api-tls-cert",
      `${dir}/${id}.crt`,
      "--api-tls-key",
      `${dir}/${id}.key`,
    ];
    const srv = await startLocalAgent({
      id: "srv",
      args: [...COMMON, ...tls("srv"), "--model", STORIES],
    });
    const gw = await startLocalAgent({
      id: "gw",
      seeds: [srv.gossipAddr],
      args: [...COMMON, ...tls("gw"), "--no-model"],
    });
    const client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(`${dir}/ca.crt`)] });
    // The serving agent's view: a gateway plans nothing.
    const rpc = await createRpcTransport(`127.0.0.1:${srv.rpcPort}`, {
      tls: { cert: `${dir}/llmctl.crt`, key: `${dir}/llmctl.key`, ca: `${dir}/ca.crt` },
    });
    try {
      await waitForPlacement(rpc, 2);
      const chat = (host: string, port: number, stream: boolean) =>
        fetch(`https://${host}:${port}/v1/chat/completions`, {
          client,
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({
            model: "stories260K",
            messages: [{ role: "user", content: "Once upon a time" }],
            max_tokens: 12,
            temperature: 0,
            stream,
          }),
        });
      const direct = await chat("localhost", srv.httpPort, false);
      assertEquals(direct.status, 200, await direct.clone().text());
      const want = (await direct.json()).choices[0].message.content;
      assert(want.length > 0, "an answer");
      const forwarded = await chat("127.0.0.1", gw.httpPort, false);
      assertEquals(forwarded.status, 200, await forwarded.clone().text());
      assertEquals((await forwarded.json()).choices[0].message.content, want);
      const streamed = await (await chat("127.0.0.1", gw.httpPort, true)).text();
      const text = streamed.split("\n").filter((l) => l.startsWith("data: {")).map((l) =>
        JSON.parse(l.slice(6)).choices[0]?.delta?.content ?? ""
      ).join("");
      assertEquals(text, want);
      assert(streamed.trimEnd().endsWith("data: [DONE]"), streamed.slice(-80));
      const started = gw.logs.find((l) => l.msg === "agent started");
      assertEquals(started?.api_tls, true);
    } finally {
      client.close();
      rpc.close();
      await stopLocalAgents([gw, srv]);
      await Deno.remove(dir, { recursive: true });
    }
  },
});
