/**
 * The HTTP API of a real agent process against misbehaving clients (issue 16, item 9): slow
 * headers and bodies are cut off, connections are capped, 429 and 503 say when to retry, and
 * clients' mistakes are not logged as the server's errors.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { startAgent, stopAll, waitForPlacement } from "../support/agents.ts";
import { assertJsonObjectOrPrefix } from "../support/json_output.ts";
import { STORIES } from "../support/paths.ts";

/** Everything the server sends on a raw connection until it closes it, or null after `ms`. */
async function readUntilClosed(conn: Deno.Conn, ms: number): Promise<string | null> {
  const chunks: string[] = [];
  const buf = new Uint8Array(4096);
  const timer = setTimeout(() => conn.close(), ms);
  try {
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      chunks.push(new TextDecoder().decode(buf.subarray(0, n)));
    }
  } catch {
    return null; // closed by our timer: the server held the connection
  } finally {
    clearTimeout(timer);
  }
  return chunks.join("");
}

async function send(port: number, text: string): Promise<Deno.Conn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode(text));
  return conn;
}

Deno.test("HTTP API: header and body timeouts, a connection cap, Retry-After, quiet 4xx", async () => {
  const agent = await startAgent({
    id: "api",
    model: STORIES,
    memoryBudget: "64MB",
    extra: [
      ...["--http-header-timeout", "300ms", "--http-body-timeout", "300ms"],
      ...["--http-max-connections", "4", "--max-requests", "1", "--queue-size", "0"],
      ...["--context-size", "2048"],
    ],
  });
  const port = agent.httpPort;
  try {
    await waitForPlacement(agent, 1);
    // Slow loris: headers that never end are cut off after the header timeout.
    const loris = await send(port, "POST /v1/completions HTTP/1.1\r\nhost: x\r\n");
    const t0 = performance.now();
    assertEquals(
      await readUntilClosed(loris, 5000),
      "",
      "the server held a header-less connection",
    );
    assert(performance.now() - t0 < 3000, `closed after ${performance.now() - t0} ms`);

    // A body that never arrives: 408, then the connection closes.
    const slow = await send(
      port,
      "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n" +
        'content-length: 100\r\n\r\n{"model":',
    );
    const answer = await readUntilClosed(slow, 5000);
    assert(answer?.startsWith("HTTP/1.1 408"), `slow body: ${answer}`);
    // It says it closes (it promised keep-alive, then closed: found by an independent tester).
    assert(/\r\nconnection: close\r\n/i.test(answer!), answer!);
    assert(!/keep-alive/i.test(answer!), answer!);

    // Over the connection cap: the oldest connection that sent nothing makes room (the cap's
    // 503 for a listener whose connections are all busy: tests/cluster/api/server_test.ts).
    const held = [];
    for (let i = 0; i < 4; i++) held.push(await send(port, ""));
    await new Promise((r) => setTimeout(r, 50));
    const extra = await send(
      port,
      "GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    const admitted = await readUntilClosed(extra, 5000);
    assert(admitted?.startsWith("HTTP/1.1 200"), `over the cap: ${admitted}`);
    const evicted = await readUntilClosed(held[0], 1000);
    for (const c of held.slice(1)) c.close();
    assertEquals(evicted, "", "the oldest silent connection was closed");
    await new Promise((r) => setTimeout(r, 100));

    // 429 (one slot, no queue) says when to retry.
    const long = new AbortController();
    const first = await fetch(`http://127.0.0.1:${port}/v1/completions`, {
      method: "POST",
      body: JSON.stringify({
        model: "stories260K",
        prompt: "Once",
        max_tokens: 1500,
        stream: true,
        temperature: 0,
      }),
      signal: long.signal,
    });
    assertEquals(first.status, 200);
    const busy = await fetch(`http://127.0.0.1:${port}/v1/completions`, {
      method: "POST",
      body: JSON.stringify({ model: "stories260K", prompt: "Once", max_tokens: 4 }),
    });
    await busy.body?.cancel();
    long.abort();
    await first.body?.cancel().catch(() => {});
    assertEquals(busy.status, 429);
    assertEquals(busy.headers.get("retry-after"), "1");

    // Bad input is the client's mistake: answered 400, never logged at error level.
    for (let i = 0; i < 10; i++) {
      const r = await fetch(`http://127.0.0.1:${port}/v1/completions`, {
        method: "POST",
        body: "{not json",
      });
      assertEquals(r.status, 400);
      await r.body?.cancel();
    }
    const errors = agent.logs.filter((l) => l.level === "error");
    assertEquals(errors, [], "client errors were logged as the server's");
  } finally {
    await stopAll([agent]);
  }
});

Deno.test("HTTP API: 503 (no placement) carries Retry-After", async () => {
  const agent = await startAgent({ id: "small", model: STORIES, memoryBudget: "1MB" });
  try {
    const r = await fetch(`http://127.0.0.1:${agent.httpPort}/v1/completions`, {
      method: "POST",
      body: JSON.stringify({ model: "stories260K", prompt: "Once", max_tokens: 4 }),
    });
    const body = await r.json();
    assertEquals(r.status, 503, JSON.stringify(body));
    assertEquals(r.headers.get("retry-after"), "1");
  } finally {
    await stopAll([agent]);
  }
});

Deno.test("HTTP API: CORS preflight before auth, response_format json_object held, max_tokens bound", async () => {
  const agent = await startAgent({
    id: "cors",
    model: STORIES,
    memoryBudget: "64MB",
    extra: ["--cors-origin", "https://app.example", "--api-key", "sk-cors"],
  });
  const url = `http://127.0.0.1:${agent.httpPort}/v1/completions`;
  const post = (body: Record<string, unknown>) =>
    fetch(url, {
      method: "POST",
      headers: { authorization: "Bearer sk-cors", origin: "https://app.example" },
      body: JSON.stringify({ model: "stories260K", prompt: "Once", ...body }),
    });
  try {
    await waitForPlacement(agent, 1);
    // Browsers send the preflight without the key: it must not get a 401.
    const pre = await fetch(url, {
      method: "OPTIONS",
      headers: {
        origin: "https://app.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
      },
    });
    await pre.body?.cancel();
    assertEquals(pre.status, 204);
    assertEquals(pre.headers.get("access-control-allow-origin"), "https://app.example");
    assert(/POST/.test(pre.headers.get("access-control-allow-methods") ?? ""), "no POST allowed");
    const other = await fetch(url, {
      method: "OPTIONS",
      headers: { origin: "https://evil.example" },
    });
    await other.body?.cancel();
    assertEquals(other.status, 403);
    assertEquals(other.headers.get("access-control-allow-origin"), null);

    const ok = await post({ max_tokens: 2 });
    await ok.body?.cancel();
    assertEquals(ok.status, 200);
    assertEquals(ok.headers.get("access-control-allow-origin"), "https://app.example");

    // response_format json_object through a real agent: the head binds the shape to the
    // vocabulary and the tail samples under it, so the text is an object, or (cut by
    // max_tokens) a prefix of one — never free text.
    for (const seed of [1, 2, 3]) {
      const json = await post({
        max_tokens: 24,
        temperature: 1,
        seed,
        response_format: { type: "json_object" },
      });
      const jsonBody = await json.json();
      assertEquals(json.status, 200, JSON.stringify(jsonBody));
      assertJsonObjectOrPrefix(jsonBody.choices[0].text, jsonBody.choices[0].finish_reason);
    }
    const schema = await post({
      max_tokens: 4,
      response_format: { type: "json_schema", json_schema: { schema: { not: {} } } },
    });
    const schemaBody = await schema.json();
    assertEquals(schema.status, 400, JSON.stringify(schemaBody));
    assertEquals(schemaBody.error.param, "response_format.json_schema.schema");

    const over = await post({ max_tokens: 2147483648 });
    await over.body?.cancel();
    assertEquals(over.status, 400);
    const max = await post({ max_tokens: 2147483647, temperature: 0 });
    await max.body?.cancel();
    assertEquals(max.status, 200);
  } finally {
    await stopAll([agent]);
  }
});

Deno.test("HTTP API: the model an unknown-model error suggests is the id /v1/models lists", async () => {
  const agent = await startAgent({ id: "ids", model: STORIES, memoryBudget: "64MB" });
  try {
    await waitForPlacement(agent, 1);
    const base = `http://127.0.0.1:${agent.httpPort}/v1`;
    const listed = (await (await fetch(`${base}/models`)).json()).data.map((m: { id: string }) =>
      m.id
    );
    assertEquals(listed.length, 1);
    for (const path of ["completions", "chat/completions"]) {
      const r = await fetch(`${base}/${path}`, {
        method: "POST",
        body: JSON.stringify({
          model: "nope",
          prompt: "Once",
          messages: path === "completions" ? undefined : [{ role: "user", content: "hi" }],
          max_tokens: 2,
        }),
      });
      const body = await r.json();
      assertEquals(r.status, 404, JSON.stringify(body));
      const suggested = /this cluster serves ([^)]+)\)/.exec(body.error.message)?.[1];
      assertEquals(suggested, listed[0], body.error.message);
    }
    const byName = await fetch(`${base}/models/nope`);
    const err = await byName.json();
    assertEquals(/this cluster serves ([^)]+)\)/.exec(err.error.message)?.[1], listed[0]);
  } finally {
    await stopAll([agent]);
  }
});

Deno.test("HTTP API: several prompts in one completions request, each answered as alone", async () => {
  const agent = await startAgent({ id: "batch", model: STORIES, memoryBudget: "64MB" });
  const post = async (prompt: unknown) => {
    const res = await fetch(`http://127.0.0.1:${agent.httpPort}/v1/completions`, {
      method: "POST",
      body: JSON.stringify({ model: "stories260K", prompt, max_tokens: 8, temperature: 0 }),
    });
    const body = await res.json();
    assertEquals(res.status, 200, JSON.stringify(body));
    return body;
  };
  try {
    await waitForPlacement(agent, 1);
    const both = await post(["Once upon a time", "One day"]);
    const a = await post("Once upon a time");
    const b = await post("One day");
    assertEquals(both.choices.map((c: { index: number }) => c.index), [0, 1]);
    assertEquals(both.choices[0].text, a.choices[0].text);
    assertEquals(both.choices[1].text, b.choices[0].text);
    assertEquals(
      both.usage.completion_tokens,
      a.usage.completion_tokens + b.usage.completion_tokens,
    );
  } finally {
    await stopAll([agent]);
  }
});
