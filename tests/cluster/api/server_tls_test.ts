/**
 * The API over HTTPS (`--api-tls-cert`, `--api-tls-key`): answers with the certificate given,
 * plain HTTP on that port gets no answer, and the connection guard sees a TLS connection's
 * requests (a stream longer than the header timeout is not cut as idle).
 */
import { startApiServer } from "../../../cluster/api/mod.ts";
import { pacedGenerator } from "../../support/paced_generator.ts";
import {
  createCa,
  issueCertificate,
  loadApiTls,
  TlsConfigError,
} from "../../../cluster/tls/mod.ts";
import { assert, assertEquals, assertRejects } from "../../support/assert.ts";

Deno.test("HTTPS API: answers over TLS, keeps a long stream, gives plain HTTP nothing", async () => {
  const ca = createCa("test CA");
  const pair = issueCertificate(ca, { commonName: "api.test", kind: "node" });
  const dir = await Deno.makeTempDir({ prefix: "dllm-api-tls-" });
  await Deno.writeTextFile(`${dir}/api.crt`, pair.cert);
  await Deno.writeTextFile(`${dir}/api.key`, pair.key);
  const tls = await loadApiTls({ cert: `${dir}/api.crt`, key: `${dir}/api.key` });
  assert(tls.names.includes("api.test") && tls.names.includes("127.0.0.1"), String(tls.names));
  // A header timeout shorter than the stream: the guard must see the request in flight.
  const api = await startApiServer({
    port: 0,
    generator: pacedGenerator({ tokens: 8, gapMs: 100 }),
    headersTimeoutMs: 300,
    tls,
  });
  const client = Deno.createHttpClient({ caCerts: [ca.cert] });
  try {
    const base = `https://127.0.0.1:${api.port}`;
    const models = await fetch(`${base}/v1/models`, { client });
    assertEquals((await models.json()).data[0].id, "fake.gguf");
    const res = await fetch(`${base}/v1/completions`, {
      client,
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "fake", prompt: "a", max_tokens: 8, stream: true }),
    });
    const text = await res.text();
    assertEquals(text.match(/data: \{/g)?.length, 9, `8 tokens and the final chunk: ${text}`);
    assert(text.endsWith("data: [DONE]\n\n"), text.slice(-100));
    // Plain HTTP to the HTTPS port: no HTTP answer.
    await assertRejects(
      () => fetch(`http://127.0.0.1:${api.port}/v1/models`).then((r) => r.text()),
      Error,
    );
    // A client that does not trust the certificate's CA refuses it.
    await assertRejects(() => fetch(`${base}/health`).then((r) => r.text()), Error);
  } finally {
    client.close();
    await api.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("HTTPS API files: a key that is not the certificate's is refused with both flags named", async () => {
  const ca = createCa("test CA");
  const a = issueCertificate(ca, { commonName: "a", kind: "node" });
  const b = issueCertificate(ca, { commonName: "b", kind: "node" });
  const dir = await Deno.makeTempDir({ prefix: "dllm-api-tls-" });
  try {
    await Deno.writeTextFile(`${dir}/a.crt`, a.cert);
    await Deno.writeTextFile(`${dir}/b.key`, b.key);
    await assertRejects(
      () => loadApiTls({ cert: `${dir}/a.crt`, key: `${dir}/b.key` }),
      TlsConfigError,
      `"${dir}/b.key" (--api-tls-key) is not the key of "${dir}/a.crt" (--api-tls-cert)`,
    );
    await assertRejects(
      () => loadApiTls({ cert: `${dir}/b.key`, key: `${dir}/a.crt` }),
      TlsConfigError,
      "did you swap the certificate and key files?",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
