/**
 * The HTTP layer against a scripted TextGenerator, driven by the official `openai` client:
 * response shapes (JSON and SSE), logprobs formats, every error status, auth, body limit, and
 * cancellation when the client goes away.
 */
import OpenAI from "openai";
import {
  type GenerationEvent,
  type GenerationParams,
  PromptTooLongError,
  QueueFullError,
  startApiServer,
  type TextGenerator,
} from "../../../cluster/api/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";
import { pacedGenerator } from "../../support/paced_generator.ts";

const KEY = "sk-test-123";

/** Tokens "Hel", "lo", " world" (logprobs -0.1, -0.2, -0.3); errors chosen by the prompt. */
class FakeGenerator implements TextGenerator {
  last?: GenerationParams;
  aborted = 0;
  models() {
    return [{ id: "fake.gguf", created: 1, contextLength: 64 }];
  }
  health() {
    return { status: "ok" };
  }
  async *generate(p: GenerationParams, signal: AbortSignal): AsyncIterable<GenerationEvent> {
    this.last = p;
    signal.addEventListener("abort", () => this.aborted++);
    if (p.model !== "fake.gguf" && p.model !== "fake") {
      throw Object.assign(new Error(`model ${p.model} is not served`), { rpcCode: "not_found" });
    }
    const prompt = p.prompt ?? p.messages!.map((m) => m.content).join(" ");
    if (prompt === "long") throw new PromptTooLongError(100, 64);
    if (prompt === "busy") throw new QueueFullError("all slots are busy");
    if (prompt === "noplace") {
      throw Object.assign(new Error("no placement: too small"), { rpcCode: "unavailable" });
    }
    const pieces = prompt === "slow" ? Array(1000).fill("x") : ["Hel", "lo", " world"];
    for (const [i, text] of pieces.entries()) {
      if (signal.aborted) return;
      if (prompt === "slow") await new Promise((r) => setTimeout(r, 5));
      yield {
        kind: "token",
        text,
        token: { tokenId: i, text, logprob: -(i + 1) / 10 },
        top: (p.topLogprobs ?? 0) > 0
          ? [{ tokenId: i, text, logprob: -(i + 1) / 10 }, { tokenId: 99, text: "?", logprob: -5 }]
          : [],
      };
    }
    yield {
      kind: "done",
      text: "",
      // "cut": the generation was cancelled on the cluster (llmctl cluster cancel, shutdown)
      finishReason: prompt === "cut" ? "cancelled" : "length",
      promptTokens: 4,
      completionTokens: pieces.length,
    };
  }
}

async function withServer(
  fn: (base: string, gen: FakeGenerator, client: OpenAI) => Promise<void>,
  opts: { maxBodyBytes?: number } = {},
) {
  const gen = new FakeGenerator();
  const api = await startApiServer({ port: 0, generator: gen, apiKey: KEY, ...opts });
  const base = `http://127.0.0.1:${api.port}`;
  try {
    await fn(base, gen, new OpenAI({ baseURL: `${base}/v1`, apiKey: KEY, maxRetries: 0 }));
  } finally {
    await api.close();
  }
}

Deno.test({
  name: "openai client: models, chat and completions, JSON and streamed, with logprobs",
  fn: () =>
    withServer(async (_base, gen, client) => {
      const models = await client.models.list();
      assertEquals(models.data.map((m) => m.id), ["fake.gguf"]);

      const chat = await client.chat.completions.create({
        model: "fake",
        messages: [{ role: "user", content: "hi" }],
        max_tokens: 3,
        temperature: 0,
        seed: 7,
        stop: ["\n"],
        presence_penalty: 0.5,
        frequency_penalty: 0.25,
        top_p: 0.9,
        logprobs: true,
        top_logprobs: 2,
      });
      assertEquals(chat.object, "chat.completion");
      assertEquals(chat.model, "fake.gguf", "the canonical id is echoed");
      assertEquals(chat.choices[0].message, {
        role: "assistant",
        content: "Hello world",
        refusal: null,
      });
      assertEquals(chat.choices[0].finish_reason, "length");
      assertEquals(chat.usage, {
        prompt_tokens: 4,
        completion_tokens: 3,
        total_tokens: 7,
        prompt_tokens_details: { cached_tokens: 0 },
      });
      const lp = chat.choices[0].logprobs!.content!;
      assertEquals(lp.map((t) => t.token), ["Hel", "lo", " world"]);
      assertEquals(lp[0].logprob, -0.1);
      assertEquals(lp[0].bytes, [72, 101, 108]);
      assertEquals(lp[1].top_logprobs.map((t) => t.token), ["lo", "?"]);
      assertEquals(gen.last, {
        model: "fake",
        messages: [{ role: "user", content: "hi" }],
        maxTokens: 3,
        temperature: 0,
        topP: 0.9,
        // Unset: the tail takes them from SAMPLING_DEFAULTS, as every other door does.
        topK: undefined,
        minP: undefined,
        repeatPenalty: undefined,
        presencePenalty: 0.5,
        frequencyPenalty: 0.25,
        seed: 7n,
        stop: ["\n"],
        topLogprobs: 2,
        logprobs: true,
      });

      const stream = await client.chat.completions.create({
        model: "fake.gguf",
        messages: [{ role: "user", content: [{ type: "text", text: "hi" }] }],
        stream: true,
        stream_options: { include_usage: true },
      });
      let text = "";
      let finish: string | null = null;
      let role = "";
      let usage;
      for await (const c of stream) {
        if (c.usage) usage = c.usage;
        if (!c.choices.length) continue;
        role ||= c.choices[0].delta.role ?? "";
        text += c.choices[0].delta.content ?? "";
        finish = c.choices[0].finish_reason ?? finish;
      }
      assertEquals([role, text, finish], ["assistant", "Hello world", "length"]);
      assertEquals(usage?.total_tokens, 7);

      const cmpl = await client.completions.create({
        model: "fake",
        prompt: "Once",
        max_tokens: 3,
        logprobs: 1,
      });
      assertEquals(cmpl.object, "text_completion");
      assertEquals(cmpl.choices[0].text, "Hello world");
      assertEquals(cmpl.choices[0].logprobs, {
        tokens: ["Hel", "lo", " world"],
        token_logprobs: [-0.1, -0.2, -0.3],
        top_logprobs: [{ Hel: -0.1, "?": -5 }, { lo: -0.2, "?": -5 }, { " world": -0.3, "?": -5 }],
        text_offset: [0, 3, 5],
      });
      // Completions default to 16 tokens, as OpenAI's do; chat runs to the end.
      await client.completions.create({ model: "fake", prompt: "x" });
      assertEquals(gen.last?.maxTokens, 16);

      const parts: string[] = [];
      for await (
        const c of await client.completions.create({ model: "fake", prompt: "x", stream: true })
      ) parts.push(c.choices[0].text);
      assertEquals(parts.join(""), "Hello world");
    }),
});

Deno.test({
  name: "errors: 400 bad JSON and fields, 401, 404, 413 (prompt and body), 429, 503",
  fn: () =>
    withServer(async (base, _gen, client) => {
      const status = async (p: Promise<unknown>) => {
        try {
          await p;
        } catch (e) {
          if (e instanceof OpenAI.APIError) {
            return { status: e.status, message: e.message, code: e.code, type: e.type };
          }
          throw e;
        }
        throw new Error("expected an error");
      };
      const chat = (content: string, extra: Record<string, unknown> = {}) =>
        client.chat.completions.create({
          model: "fake",
          messages: [{ role: "user", content }],
          ...extra,
        });
      const n2 = await status(chat("hi", { n: 2 }));
      assertEquals(n2.status, 400);
      assert(n2.message.includes("n must be 1"), n2.message);
      assertEquals((await status(chat("hi", { temperature: 3 }))).status, 400);
      assertEquals((await status(chat("hi", { top_logprobs: 2 }))).status, 400);
      const model = await status(
        client.chat.completions.create({
          model: "gpt-4",
          messages: [{ role: "user", content: "" }],
        }),
      );
      assertEquals([model.status, model.code], [404, "model_not_found"]);
      const long = await status(chat("long"));
      assertEquals([long.status, long.code], [413, "context_length_exceeded"]);
      assert(long.message.includes("--context-size"), long.message);
      const busy = await status(chat("busy"));
      assertEquals([busy.status, busy.type], [429, "rate_limit_error"]);
      const none = await status(chat("noplace"));
      assertEquals(none.status, 503);
      assert(none.message.includes("no placement"), none.message);
      const wrong = new OpenAI({ baseURL: `${base}/v1`, apiKey: "sk-wrong", maxRetries: 0 });
      const auth = await status(wrong.models.list());
      assertEquals([auth.status, auth.code], [401, "invalid_api_key"]);

      const post = (body: string) =>
        fetch(`${base}/v1/chat/completions`, {
          method: "POST",
          headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
          body,
        });
      const badJson = await post("{not json");
      const body = await badJson.json();
      assertEquals(badJson.status, 400);
      assertEquals(body.error.type, "invalid_request_error");
      assert(body.error.message.includes("not valid JSON"), body.error.message);
      const noMessages = await post(JSON.stringify({ model: "fake" }));
      assertEquals([noMessages.status, (await noMessages.json()).error.param], [400, "messages"]);
      const unknown = await fetch(`${base}/v1/embeddings`, {
        method: "POST",
        headers: { authorization: `Bearer ${KEY}` },
        body: "{}",
      });
      assertEquals(unknown.status, 404);
      await unknown.body?.cancel();
      // /health needs no key (probes).
      assertEquals((await (await fetch(`${base}/health`)).json()).status, "ok");
    }),
});

Deno.test({
  name: "a generation cancelled on the cluster ends with finish_reason cancelled, never stop",
  fn: () =>
    withServer(async (_base, _gen, client) => {
      const chat = await client.chat.completions.create({
        model: "fake",
        messages: [{ role: "user", content: "cut" }],
      });
      assertEquals(chat.choices[0].finish_reason as string, "cancelled");
      const done = await client.completions.create({ model: "fake", prompt: "cut" });
      assertEquals(done.choices[0].finish_reason as string, "cancelled");
      const stream = await client.chat.completions.create({
        model: "fake",
        messages: [{ role: "user", content: "cut" }],
        stream: true,
      });
      const reasons: (string | null)[] = [];
      for await (const c of stream) reasons.push(c.choices[0]?.finish_reason ?? null);
      assertEquals(reasons.filter((r) => r !== null), ["cancelled"]);
    }),
});

Deno.test({
  name: "request bodies over the limit are refused with 413",
  fn: () =>
    withServer(async (base) => {
      const res = await fetch(`${base}/v1/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${KEY}` },
        body: JSON.stringify({ model: "fake", prompt: "x".repeat(5000) }),
      });
      assertEquals(res.status, 413);
      assertEquals((await res.json()).error.code, "request_too_large");
    }, { maxBodyBytes: 1024 }),
});

Deno.test({
  name: "a client that goes away mid-stream cancels its generation",
  fn: () =>
    withServer(async (_base, gen, client) => {
      const ctl = new AbortController();
      const stream = await client.chat.completions.create(
        { model: "fake", messages: [{ role: "user", content: "slow" }], stream: true },
        { signal: ctl.signal },
      );
      let chunks = 0;
      try {
        for await (const _ of stream) {
          if (++chunks === 3) ctl.abort();
        }
      } catch (e) {
        assert(
          e instanceof OpenAI.APIUserAbortError || (e as Error).name === "AbortError",
          String(e),
        );
      }
      for (let i = 0; i < 100 && gen.aborted === 0; i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assertEquals(gen.aborted, 1, "the generator saw the abort");
      // A generation that ends normally is not aborted.
      await client.chat.completions.create({
        model: "fake",
        messages: [{ role: "user", content: "x" }],
      });
      assertEquals(gen.aborted, 1);
    }),
});

/** Everything `conn` sends until it closes or `until` appears; false when it closed first. */
async function readUntil(conn: Deno.Conn, until: string, timeoutMs: number) {
  const timer = setTimeout(() => conn.close(), timeoutMs);
  let text = "";
  const buf = new Uint8Array(65536);
  const dec = new TextDecoder();
  try {
    for (;;) {
      const n = await conn.read(buf).catch(() => null);
      if (n === null) return { text, found: false };
      text += dec.decode(buf.subarray(0, n), { stream: true });
      if (text.includes(until)) return { text, found: true };
    }
  } finally {
    clearTimeout(timer);
  }
}

Deno.test({
  name:
    "an idle keep-alive connection lives as long as --http-header-timeout, not the runtime's 5 s",
  fn: async () => {
    const api = await startApiServer({
      port: 0,
      generator: pacedGenerator({ tokens: 1, gapMs: 0 }),
      headersTimeoutMs: 7000,
    });
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: api.port });
    try {
      const get = new TextEncoder().encode("GET /health HTTP/1.1\r\nhost: x\r\n\r\n");
      await conn.write(get);
      const first = await readUntil(conn, "}", 5000);
      assert(first.found, first.text);
      assert(/keep-alive: timeout=7\b/i.test(first.text), `announced: ${first.text.slice(0, 300)}`);
      // Past the runtime's default 5 s, within the 7 s limit: the same connection still answers.
      await new Promise((r) => setTimeout(r, 5600));
      await conn.write(get);
      const second = await readUntil(conn, "}", 3000);
      assert(second.found, `closed after 5.6 s idle: ${JSON.stringify(second.text)}`);
    } finally {
      conn.close();
      await api.close();
    }
  },
});

Deno.test({
  name: "at the connection cap with every connection busy, a new one gets 503 and Retry-After",
  fn: async () => {
    const api = await startApiServer({
      port: 0,
      generator: pacedGenerator({ tokens: 40, gapMs: 50 }),
      maxConnections: 2,
    });
    const conns: Deno.Conn[] = [];
    try {
      const body = JSON.stringify({ model: "fake", prompt: "a", max_tokens: 40, stream: true });
      for (let i = 0; i < 2; i++) {
        const c = await Deno.connect({ hostname: "127.0.0.1", port: api.port });
        conns.push(c);
        await c.write(new TextEncoder().encode(
          `POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n` +
            `content-length: ${body.length}\r\n\r\n${body}`,
        ));
        assert((await readUntil(c, "data: {", 3000)).found, "the stream started");
      }
      const extra = await Deno.connect({ hostname: "127.0.0.1", port: api.port });
      conns.push(extra);
      const { text } = await readUntil(extra, "}}", 3000);
      assert(text.startsWith("HTTP/1.1 503"), text);
      assert(/retry-after: 1/i.test(text), text);
      // The busy ones were not cut for it.
      assert((await readUntil(conns[0], "data: [DONE]", 5000)).found, "a busy stream was cut");
    } finally {
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed by the server */ }
      }
      await api.close();
    }
  },
});

Deno.test({
  name: "pipelined keep-alive requests: a stream longer than the header timeout is not cut",
  fn: async () => {
    const api = await startApiServer({
      port: 0,
      generator: pacedGenerator({ tokens: 8, gapMs: 100 }),
      headersTimeoutMs: 300,
    });
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: api.port });
    try {
      const req = (body: unknown) => {
        const b = JSON.stringify(body);
        return `POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n` +
          `content-length: ${new TextEncoder().encode(b).length}\r\n\r\n${b}`;
      };
      // Both requests in one write: the first one's answer used to re-arm the idle timer while
      // the second one ran, and the timer cut the second one's stream after 300 ms.
      await conn.write(new TextEncoder().encode(
        req({ model: "fake", prompt: "a", max_tokens: 1 }) +
          req({ model: "fake", prompt: "b", max_tokens: 8, stream: true }),
      ));
      const { text, found } = await readUntil(conn, "data: [DONE]", 5000);
      assert(found, `the stream was cut: ${text.slice(-200)}`);
      assertEquals(text.match(/data: \{/g)?.length, 9, "8 tokens and the final chunk");
    } finally {
      conn.close();
      await api.close();
    }
  },
});

Deno.test({
  name:
    "GET /v1/models/{id} takes the names generation takes; a broken escape or unknown id is a 404",
  fn: () =>
    withServer(async (base, _gen, client) => {
      // "fake" works as "model" for generation, so it names the model here too.
      assertEquals((await client.models.retrieve("fake")).id, "fake.gguf");
      assertEquals((await client.models.retrieve("fake.gguf")).id, "fake.gguf");
      const get = async (path: string) => {
        const res = await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${KEY}` } });
        return { status: res.status, error: (await res.json()).error };
      };
      const broken = await get("/v1/models/%E0%A4%A");
      assertEquals([broken.status, broken.error.code, broken.error.param], [
        404,
        "model_not_found",
        "model",
      ]);
      assertEquals((await get("/v1/models/gpt-4")).status, 404);
      // Generation's unknown model names the field too.
      const res = await fetch(`${base}/v1/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${KEY}` },
        body: JSON.stringify({ model: "gpt-4", prompt: "hi" }),
      });
      const error = (await res.json()).error;
      assertEquals([res.status, error.code, error.param], [404, "model_not_found", "model"]);
    }),
});

Deno.test({
  name:
    "batches: more prompts than the agent ever takes is a 400; a client leaving one is no error",
  fn: async () => {
    const logged: { level: string; msg: string; fields?: Record<string, unknown> }[] = [];
    let waiting = 0;
    const generator: TextGenerator = {
      models: () => [{ id: "fake.gguf", created: 1, contextLength: 64 }],
      health: () => ({ status: "ok" }),
      capacity: () => 4,
      // Every prompt waits in line until its request is aborted, as Admission.acquire does.
      async *generate(_p: GenerationParams, signal: AbortSignal) {
        waiting++;
        await new Promise((_, reject) =>
          signal.addEventListener("abort", () => reject(signal.reason))
        );
        yield* [] as GenerationEvent[];
      },
    };
    const api = await startApiServer({
      port: 0,
      generator,
      log: (level, msg, fields) => logged.push({ level, msg, fields }),
    });
    const url = `http://127.0.0.1:${api.port}/v1/completions`;
    try {
      const big = await fetch(url, {
        method: "POST",
        body: JSON.stringify({ model: "fake", prompt: ["a", "b", "c", "d", "e"] }),
      });
      const error = (await big.json()).error;
      // A 429 would be retried for ever: 5 prompts never fit 4 places.
      assertEquals([big.status, error.param], [400, "prompt"]);
      assert(error.message.includes("at most 4"), error.message);
      const ctl = new AbortController();
      const left = fetch(url, {
        method: "POST",
        body: JSON.stringify({ model: "fake", prompt: ["a", "b", "c", "d"] }),
        signal: ctl.signal,
      }).catch((e) => e);
      for (let i = 0; i < 100 && waiting < 4; i++) await new Promise((r) => setTimeout(r, 10));
      ctl.abort();
      await left;
      await new Promise((r) => setTimeout(r, 100));
      const errors = logged.filter((l) => l.level === "error");
      assertEquals(errors, [], "a client leaving is not an agent bug");
    } finally {
      await api.close();
    }
  },
});

Deno.test({
  name:
    "a stream answers 200 once its request is taken, and keeps the connection alive until tokens come",
  fn: async () => {
    const api = await startApiServer({
      port: 0,
      apiKey: KEY,
      // In line (or in a long prompt) for 400 ms before the first token.
      generator: pacedGenerator({ tokens: 2, gapMs: 0, delayMs: 400, accept: true }),
      sseKeepAliveMs: 50,
    });
    const base = `http://127.0.0.1:${api.port}`;
    try {
      const started = performance.now();
      const res = await fetch(`${base}/v1/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${KEY}` },
        body: JSON.stringify({ model: "fake", prompt: "a", max_tokens: 2, stream: true }),
      });
      const headersMs = performance.now() - started;
      assertEquals(res.status, 200);
      assert(headersMs < 300, `the status line waited ${headersMs.toFixed(0)} ms for a token`);
      const text = await res.text();
      const firstData = text.indexOf("data: ");
      const pings = text.slice(0, firstData).match(/^: keep-alive\n\n/gm)?.length ?? 0;
      assert(pings >= 2, `keep-alive comments before the first token: ${pings}\n${text}`);
      assert(text.endsWith("data: [DONE]\n\n"), text);
      // The official client reads through the comments.
      const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: KEY, maxRetries: 0 });
      let out = "";
      const stream = await client.chat.completions.create({
        model: "fake",
        messages: [{ role: "user", content: "hi" }],
        max_tokens: 2,
        stream: true,
      });
      for await (const c of stream) out += c.choices[0]?.delta?.content ?? "";
      assertEquals(out, "xx");
    } finally {
      await api.close();
    }
  },
});

Deno.test({
  name: "an internal error is logged at error, with its stack under DLLM_DEBUG, streamed or not",
  fn: async () => {
    const logged: { level: string; msg: string; fields?: Record<string, unknown> }[] = [];
    const generator: TextGenerator = {
      models: () => [{ id: "fake.gguf", created: 1, contextLength: 64 }],
      health: () => ({ status: "ok" }),
      async *generate(p: GenerationParams) {
        if (p.maxTokens === 2) {
          // The streamed request: its status (200) is sent with the first token.
          yield {
            kind: "token",
            text: "x",
            token: { tokenId: 1, text: "x", logprob: -1 },
            top: [],
          };
        }
        throw new TypeError("Cannot read properties of undefined (reading 'tokenizer')");
      },
    };
    const api = await startApiServer({
      port: 0,
      generator,
      log: (level, msg, fields) => logged.push({ level, msg, fields }),
    });
    const before = Deno.env.get("DLLM_DEBUG");
    Deno.env.set("DLLM_DEBUG", "1");
    try {
      const url = `http://127.0.0.1:${api.port}/v1/completions`;
      const whole = await fetch(url, {
        method: "POST",
        body: JSON.stringify({ model: "fake", prompt: "a" }),
      });
      assertEquals(whole.status, 500);
      await whole.body?.cancel();
      const streamed = await fetch(url, {
        method: "POST",
        body: JSON.stringify({ model: "fake", prompt: "a", stream: true, max_tokens: 2 }),
      });
      const text = await streamed.text();
      assert(text.includes("internal error"), text);
      const errors = logged.filter((l) => l.level === "error");
      assertEquals(errors.map((l) => l.msg), ["api request failed", "api stream failed"]);
      for (const l of errors) {
        assert(String(l.fields?.stack).includes("server_test.ts"), JSON.stringify(l.fields));
      }
    } finally {
      if (before === undefined) Deno.env.delete("DLLM_DEBUG");
      else Deno.env.set("DLLM_DEBUG", before);
      await api.close();
    }
  },
});

Deno.test({
  name:
    "a browser page's simple POST from an origin not allowed runs nothing; odd paths, HEAD, encodings",
  fn: async () => {
    let runs = 0;
    const paced = pacedGenerator({ tokens: 1, gapMs: 0 });
    const generator: TextGenerator = {
      ...paced,
      generate: (p, signal, onAccepted) => (runs++, paced.generate(p, signal, onAccepted)),
    };
    const api = await startApiServer({ port: 0, generator, corsOrigins: ["https://app.example"] });
    const base = `http://127.0.0.1:${api.port}`;
    const post = async (headers: Record<string, string>) => {
      const res = await fetch(`${base}/v1/completions`, {
        method: "POST",
        headers,
        body: JSON.stringify({ model: "fake", prompt: "a", max_tokens: 1 }),
      });
      const body = await res.text();
      return { status: res.status, body };
    };
    try {
      // text/plain needs no preflight: before, it ran, and only its answer was hidden.
      const evil = await post({ origin: "https://evil.example", "content-type": "text/plain" });
      assertEquals(evil.status, 403, evil.body);
      assert(evil.body.includes("--cors-origin https://evil.example"), evil.body);
      assertEquals(runs, 0);
      assertEquals((await post({ origin: "https://app.example" })).status, 200);
      assertEquals((await post({})).status, 200, "clients without Origin are not browsers");
      assertEquals(runs, 2);
      const gz = await post({ "content-encoding": "gzip" });
      assertEquals(gz.status, 415, gz.body);
      // "//v1/models" was read as host "v1", path "/models": 404.
      const models = await fetch(`${base}//v1/models`);
      assertEquals(models.status, 200, await models.text());
      const head = await fetch(`${base}/v1/models`, { method: "HEAD" });
      await head.body?.cancel();
      assertEquals(head.status, 200);
    } finally {
      await api.close();
    }
  },
});

Deno.test({
  name: "a batch prompt's failure names the prompt",
  fn: async () => {
    const paced = pacedGenerator({ tokens: 1, gapMs: 0 });
    const generator: TextGenerator = {
      ...paced,
      async *generate(p, signal, onAccepted) {
        if (p.prompt === "long") throw new PromptTooLongError(300, 64);
        yield* paced.generate(p, signal, onAccepted);
      },
    };
    const api = await startApiServer({ port: 0, generator });
    try {
      const res = await fetch(`http://127.0.0.1:${api.port}/v1/completions`, {
        method: "POST",
        body: JSON.stringify({ model: "fake", prompt: ["a", "long", "b"], max_tokens: 1 }),
      });
      const { error } = await res.json();
      assertEquals([res.status, error.param], [413, "prompt"]);
      assert(error.message.startsWith("prompt 1 of 3: "), error.message);
    } finally {
      await api.close();
    }
  },
});

Deno.test("an API reachable from the network warns that it is plain HTTP when the RPC uses TLS", async () => {
  // The API has no TLS of its own: with certificates set, a user could take the whole agent
  // for encrypted while keys and prompts cross the network in the clear.
  for (const rpcTls of [true, false]) {
    const warnings: string[] = [];
    const api = await startApiServer({
      host: "0.0.0.0",
      port: 0,
      generator: new FakeGenerator(),
      apiKey: KEY,
      rpcTls,
      log: (level, msg) => level === "warn" && warnings.push(msg),
    });
    await api.close();
    assertEquals(warnings.some((w) => w.includes("plain HTTP although")), rpcTls, `${warnings}`);
  }
});

/** `n` POSTs of `body` to `path` as one pipelined write. */
function pipelined(path: string, body: unknown, n: number): Uint8Array {
  const b = JSON.stringify(body);
  const one = `POST ${path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${KEY}\r\n` +
    `content-type: application/json\r\ncontent-length: ${new TextEncoder().encode(b).length}` +
    `\r\n\r\n${b}`;
  return new TextEncoder().encode(one.repeat(n));
}

Deno.test({
  name: "a client that closes a connection of pipelined requests cancels every one of them",
  fn: () =>
    withServer(async (base, gen) => {
      // Under Deno's node:http a response not yet attached to its socket emits no "close":
      // only the first of three pipelined generations stopped, the other two ran to the end.
      for (const stream of [true, false]) {
        gen.aborted = 0;
        const conn = await Deno.connect({
          hostname: "127.0.0.1",
          port: new URL(base).port as never,
        });
        await conn.write(
          pipelined("/v1/completions", { model: "fake", prompt: "slow", stream }, 3),
        );
        await new Promise((r) => setTimeout(r, 300));
        conn.close();
        for (let i = 0; i < 100 && gen.aborted < 3; i++) {
          await new Promise((r) => setTimeout(r, 20));
        }
        assertEquals(gen.aborted, 3, `stream ${stream}: generations cancelled`);
      }
    }),
});

Deno.test({
  name:
    "a client that stops reading its stream is cut off after the body timeout, its generation cancelled",
  fn: async () => {
    let aborted = 0;
    const big = "y".repeat(4096);
    const generator: TextGenerator = {
      models: () => [{ id: "fake.gguf", created: 1, contextLength: 64 }],
      health: () => ({ status: "ok" }),
      async *generate(_p: GenerationParams, signal: AbortSignal) {
        signal.addEventListener("abort", () => aborted++);
        // 40 MB of answer, far more than the socket buffers hold
        for (let i = 0; i < 10_000 && !signal.aborted; i++) {
          if (i % 64 === 0) await new Promise((r) => setTimeout(r, 0));
          yield {
            kind: "token",
            text: big,
            token: { tokenId: 1, text: big, logprob: -1 },
            top: [],
          };
        }
        yield {
          kind: "done",
          text: "",
          finishReason: "length",
          promptTokens: 1,
          completionTokens: 1,
        };
      },
    };
    const api = await startApiServer({
      port: 0,
      generator,
      bodyTimeoutMs: 1000,
      maxConnections: 2,
    });
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: api.port });
    try {
      const b = JSON.stringify({ model: "fake", prompt: "a", stream: true, max_tokens: 10_000 });
      await conn.write(new TextEncoder().encode(
        `POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n` +
          `content-length: ${b.length}\r\n\r\n${b}`,
      ));
      // Never read. Before, the connection stayed busy for as long as the client stayed, its
      // answer buffered without bound; at the connection cap every new client got 503.
      for (let i = 0; i < 150 && aborted === 0; i++) await new Promise((r) => setTimeout(r, 50));
      assertEquals(aborted, 1, "the generation was cancelled once the client stopped reading");
      // Its place under the cap is free again: two new connections are both served.
      for (let i = 0; i < 2; i++) {
        const r = await fetch(`http://127.0.0.1:${api.port}/health`);
        assertEquals(r.status, 200);
        await r.body?.cancel();
      }
    } finally {
      try {
        conn.close();
      } catch { /* closed by the server */ }
      await api.close();
    }
  },
});

Deno.test({
  name:
    "OpenAI's shapes: usage null on every chunk with include_usage, Allow on a 405; a client gone mid-body is logged at debug",
  fn: async () => {
    const logged: { level: string; msg: string }[] = [];
    const api = await startApiServer({
      port: 0,
      generator: pacedGenerator({ tokens: 3, gapMs: 0 }),
      log: (level, msg) => logged.push({ level, msg }),
    });
    const base = `http://127.0.0.1:${api.port}`;
    try {
      const r = await fetch(`${base}/v1/chat/completions`, {
        method: "POST",
        body: JSON.stringify({
          model: "fake",
          messages: [{ role: "user", content: "a" }],
          stream: true,
          stream_options: { include_usage: true },
        }),
      });
      const chunks = (await r.text()).split("\n\n").filter((l) => l.startsWith("data: {"))
        .map((l) => JSON.parse(l.slice(6)));
      assert(chunks.length >= 3, JSON.stringify(chunks));
      for (const c of chunks.slice(0, -1)) assertEquals(c.usage, null, JSON.stringify(c));
      assertEquals(typeof chunks.at(-1).usage.total_tokens, "number");
      const put = await fetch(`${base}/v1/models`, { method: "PUT" });
      assertEquals([put.status, put.headers.get("allow")], [405, "GET, HEAD"]);
      await put.body?.cancel();
      const get = await fetch(`${base}/v1/completions`);
      assertEquals([get.status, get.headers.get("allow")], [405, "POST"]);
      await get.body?.cancel();
      // A body cut short by the client: "internal error: aborted (a bug in the agent…)" at
      // error level, once per disconnect.
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: api.port });
      await conn.write(new TextEncoder().encode(
        'POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{"model"',
      ));
      await new Promise((r) => setTimeout(r, 100));
      conn.close();
      await new Promise((r) => setTimeout(r, 300));
      assertEquals(logged.filter((l) => l.level === "error" || l.level === "warn"), []);
    } finally {
      await api.close();
    }
  },
});
