/**
 * A forwarding agent reaching a member's HTTPS API (cluster/agent/forward_tls.ts): the answer
 * streams back as fetch's would; a certificate of a CA it does not trust is refused; a name
 * check passes on the member's node id where the address dialled is not in the certificate.
 */
import * as https from "node:https";
import { apiTlsTrust, fetchOverTls } from "../../../cluster/agent/forward_tls.ts";
import { createCa, issueCertificate } from "../../../cluster/tls/mod.ts";
import { assert, assertEquals, assertRejects } from "../../support/assert.ts";

/** An HTTPS server on 127.0.0.2 with `cert`, answering three chunks, the request's body echoed. */
async function serve(pair: { cert: string; key: string }) {
  const server = https.createServer(pair, (req, res) => {
    let body = "";
    req.on("data", (d) => body += d);
    req.on("end", async () => {
      res.writeHead(201, { "content-type": "text/plain", "set-cookie": ["a=1", "b=2"] });
      for (const part of [`${req.method} ${req.url} `, body, " end"]) {
        res.write(part);
        await new Promise((r) => setTimeout(r, 20));
      }
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.2", () => r()));
  return {
    url: `https://127.0.0.2:${(server.address() as { port: number }).port}`,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

const init = (body?: string) => ({
  method: body === undefined ? "GET" : "POST",
  headers: new Headers({ "x-test": "1" }),
  body,
  signal: new AbortController().signal,
});

Deno.test("fetchOverTls: streams a member's answer, checks its certificate by node id and CA", async () => {
  const ca = createCa("cluster CA");
  // A node certificate lists 127.0.0.1 and localhost but not 127.0.0.2, where it is dialled.
  const srv = issueCertificate(ca, { commonName: "srv", kind: "node" });
  const server = await serve(srv);
  const dir = await Deno.makeTempDir({ prefix: "dllm-fwd-tls-" });
  try {
    await Deno.writeTextFile(`${dir}/ca.crt`, ca.cert);
    const trust = await apiTlsTrust(`${dir}/ca.crt`);
    const res = await fetchOverTls(`${server.url}/v1/x?y=1`, init("hello"), trust, "srv");
    assertEquals(res.status, 201);
    assertEquals(res.headers.getSetCookie(), ["a=1", "b=2"]);
    assertEquals(await res.text(), "POST /v1/x?y=1 hello end");
    // Another node's id: the certificate names neither it nor the address.
    const wrong = await assertRejects(
      () => fetchOverTls(`${server.url}/`, init(), trust, "other"),
      Error,
    );
    assert(wrong.message.includes('names none of "other"'), wrong.message);
    // A CA this agent does not trust (nor do the public roots).
    const stranger = await apiTlsTrust(undefined);
    await assertRejects(() => fetchOverTls(`${server.url}/`, init(), stranger, "srv"), Error);
    // Agents sharing one API certificate: its names are accepted in a member's too.
    const shared = { ...(await apiTlsTrust(`${dir}/ca.crt`)), names: ["srv"] };
    assertEquals((await fetchOverTls(`${server.url}/`, init(), shared, "x")).status, 201);
    // A gateway whose own API certificate is a node certificate (localhost, 127.0.0.1 and ::1
    // among its names): those are no service name. Taken as one, any certificate of the CA
    // (srv's here, dialled as member "b") passed as any member, and got the client's API key.
    const gw = issueCertificate(ca, { commonName: "gw", kind: "node" });
    const own = { cert: gw.cert, key: gw.key, names: ["gw", "localhost", "127.0.0.1", "::1"] };
    const asNode = await apiTlsTrust(`${dir}/ca.crt`, own);
    assertEquals(asNode.names, ["gw"]);
    await assertRejects(() => fetchOverTls(`${server.url}/`, init(), asNode, "b"), Error);
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});
