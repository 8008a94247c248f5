/**
 * The OpenAI-compatible API of real agent processes, driven by the official `openai` client:
 * greedy output equals `llmctl generate`, chat/completions/streaming/stop/logprobs, 16 concurrent
 * requests equal their solo runs (batching changes nothing), a client that disconnects frees its
 * slot, and every error status (400, 401, 404, 413, 429 + RESOURCE_EXHAUSTED, 503).
 */
import OpenAI from "openai";
import { Code, ConnectError } from "@connectrpc/connect";
import { assert, assertEquals } from "../support/assert.ts";
import { type AgentProcess, generate, startAgent, stopAll } from "../support/agents.ts";
import { llmctlJson } from "../support/cli.ts";
import { STORIES } from "../support/paths.ts";

const KEY = "sk-e2e-key";

async function health(a: AgentProcess) {
  return await (await fetch(`http://127.0.0.1:${a.httpPort}/health`)).json();
}

async function waitHealth(a: AgentProcess, ok: (h: Record<string, unknown>) => boolean) {
  let h: Record<string, unknown> = {};
  for (let i = 0; i < 300; i++) {
    h = await health(a);
    if (ok(h)) return h;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`health never matched; last: ${JSON.stringify(h)}`);
}

/** Stage forward passes run and tokens generated so far (from the agent's /metrics). */
async function passesAndTokens(a: AgentProcess) {
  const text = await (await fetch(`http://127.0.0.1:${a.metricsPort}/metrics`)).text();
  const sum = (re: RegExp) => [...text.matchAll(re)].reduce((acc, m) => acc + Number(m[1]), 0);
  return {
    passes: sum(/^distributed_llm_stage_forward_duration_seconds_count\{[^}]*\} (\S+)$/gm),
    tokens: sum(/^distributed_llm_tokens_generated_total (\S+)$/gm),
  };
}

function client(a: AgentProcess, apiKey = KEY) {
  return new OpenAI({ baseURL: `http://127.0.0.1:${a.httpPort}/v1`, apiKey, maxRetries: 0 });
}

async function apiError(p: Promise<unknown>) {
  try {
    await p;
  } catch (e) {
    if (e instanceof OpenAI.APIError) return { status: e.status, code: e.code, message: e.message };
    throw e;
  }
  throw new Error("expected an error");
}

Deno.test({
  name: "openai client against real agents: outputs, batching, disconnects, errors",
  fn: async (t) => {
    const [main, tiny, small] = await Promise.all([
      startAgent({
        id: "api",
        model: STORIES,
        extra: ["--api-key", KEY, "--max-sessions", "16", "--context-size", "512"],
      }),
      startAgent({
        id: "tiny",
        model: STORIES,
        extra: ["--max-requests", "1", "--queue-size", "0"],
      }),
      startAgent({ id: "small", model: STORIES, memoryBudget: "200kB" }),
    ]);
    const agents = [main, tiny, small];
    try {
      await Promise.all([
        waitHealth(main, (h) => h.status === "ok"),
        waitHealth(tiny, (h) => h.status === "ok"),
      ]);
      const api = client(main);

      await t.step("greedy completions and chat equal llmctl generate --json", async () => {
        const local = await llmctlJson([
          "generate",
          "-m",
          STORIES,
          "--backend",
          "reference",
          "-p",
          "Once upon a time",
          "-n",
          "32",
          "--temperature",
          "0",
          "--json",
        ]);
        const c = await api.completions.create({
          model: "stories260K.gguf",
          prompt: "Once upon a time",
          max_tokens: 32,
          temperature: 0,
        });
        assertEquals(c.choices[0].text, local.text);
        assertEquals(c.choices[0].finish_reason, local.finish_reason);
        assertEquals(c.usage?.completion_tokens, (local.tokens as number[]).length);
        assertEquals(c.usage?.prompt_tokens, (local.prompt_tokens as number[]).length);

        // Chat: stories260K has no template, so the transcript fallback is the prompt.
        const chatLocal = await llmctlJson([
          "generate",
          "-m",
          STORIES,
          "--backend",
          "reference",
          "-p",
          "System: Tell a story.\nUser: A dog\nAssistant:",
          "-n",
          "24",
          "--temperature",
          "0",
          "--json",
        ]);
        const messages = [
          { role: "system" as const, content: "Tell a story." },
          { role: "user" as const, content: "A dog" },
        ];
        const chat = await api.chat.completions.create({
          model: "stories260K",
          messages,
          max_tokens: 24,
          temperature: 0,
        });
        assertEquals(chat.choices[0].message.content, chatLocal.text);
        // Streaming gives the same text, chunk by chunk.
        let streamed = "";
        let finish = "";
        for await (
          const ch of await api.chat.completions.create({
            model: "stories260K",
            messages,
            max_tokens: 24,
            temperature: 0,
            stream: true,
          })
        ) {
          streamed += ch.choices[0]?.delta.content ?? "";
          finish = ch.choices[0]?.finish_reason ?? finish;
        }
        assertEquals(streamed, chatLocal.text);
        assertEquals(finish, "length");
        // InferenceService.Generate renders chat messages the same way (one core for both).
        const rpc = await generate(main, "", 24, { messages });
        assertEquals(rpc.text, chatLocal.text);
      });

      await t.step("logprobs (both formats) and a stop string across tokens", async () => {
        const c = await api.completions.create({
          model: "stories260K",
          prompt: "Once upon a time",
          max_tokens: 24,
          temperature: 0,
          logprobs: 3,
        });
        const lp = c.choices[0].logprobs!;
        assertEquals(lp.tokens!.join(""), c.choices[0].text);
        for (const [i, top] of lp.top_logprobs!.entries()) {
          const best = Object.entries(top).sort((a, b) => b[1] - a[1])[0];
          assertEquals(best, [lp.tokens![i], lp.token_logprobs![i]], "greedy picks the top token");
          assertEquals(Object.keys(top).length, 3);
        }
        const chat = await api.chat.completions.create({
          model: "stories260K",
          messages: [{ role: "user", content: "Hi" }],
          max_tokens: 8,
          temperature: 0,
          logprobs: true,
          top_logprobs: 2,
        });
        const content = chat.choices[0].logprobs!.content!;
        assertEquals(content.length, 8);
        for (const t of content) {
          assertEquals(t.top_logprobs[0].token, t.token);
          assert(t.logprob <= 0 && t.top_logprobs.length === 2);
        }

        // A stop string made of the end of one token and the start of the next.
        const k = lp.tokens!.findIndex((t, i) => i > 2 && t.length >= 2);
        const stop = lp.tokens![k].slice(-2) + lp.tokens![k + 1].slice(0, 2);
        const text = c.choices[0].text;
        const cut = text.slice(0, text.indexOf(stop));
        const s = await api.completions.create({
          model: "stories260K",
          prompt: "Once upon a time",
          max_tokens: 24,
          temperature: 0,
          stop: [stop],
          logprobs: 1,
        });
        assertEquals([s.choices[0].text, s.choices[0].finish_reason], [cut, "stop"]);
        // Log-probabilities only of the tokens whose text starts before the cut (token k + 1
        // holds only stop-string text: it was listed, and streamed, before).
        let at = 0;
        const shown = lp.tokens!.filter((tok) => (at += tok.length) - tok.length < cut.length);
        assert(shown.length <= k + 1, `${shown.length} tokens for a cut in token ${k}`);
        assertEquals(s.choices[0].logprobs!.tokens, shown);
        let streamed = "";
        const streamedTokens: string[] = [];
        for await (
          const ch of await api.completions.create({
            model: "stories260K",
            prompt: "Once upon a time",
            max_tokens: 24,
            temperature: 0,
            stop: stop,
            stream: true,
            logprobs: 1,
          })
        ) {
          streamed += ch.choices[0]?.text ?? "";
          streamedTokens.push(...(ch.choices[0]?.logprobs?.tokens ?? []));
        }
        assertEquals(streamed, cut, "no part of the stop string is streamed");
        assertEquals(streamedTokens, shown);
      });

      await t.step(
        "logit_bias bans a token through the real API; a token past the vocabulary is a 400",
        async () => {
          const plain = await api.completions.create({
            model: "stories260K.gguf",
            prompt: "Once",
            max_tokens: 3,
            temperature: 0,
          });
          assertEquals(plain.choices[0].text, " upon a time");
          // 407 is "▁upon": banned, the greedy text goes elsewhere.
          const banned = await api.completions.create({
            model: "stories260K.gguf",
            prompt: "Once",
            max_tokens: 3,
            temperature: 0,
            logit_bias: { "407": -100 },
          });
          assert(!banned.choices[0].text.startsWith(" upon"), banned.choices[0].text);
          const res = await fetch(`http://127.0.0.1:${main.httpPort}/v1/completions`, {
            method: "POST",
            headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` },
            body: JSON.stringify({
              model: "stories260K.gguf",
              prompt: "Once",
              max_tokens: 2,
              logit_bias: { "600": 1 },
            }),
          });
          const body = await res.json();
          assertEquals(res.status, 400, JSON.stringify(body));
          assert(/logit_bias names token 600/.test(body.error.message), body.error.message);
        },
      );

      await t.step("16 concurrent greedy requests each equal their solo run", async () => {
        const names = ["Tom", "Sue", "Ben", "Lily", "Max", "Amy", "Sam", "Mia"];
        const prompts = Array.from(
          { length: 16 },
          (_, i) => `${names[i % 8]} ${i < 8 ? "went to the park" : "had a big red ball"}`,
        );
        const run = (prompt: string, i: number) =>
          api.completions.create({
            model: "stories260K",
            prompt,
            max_tokens: 16 + (i % 5),
            temperature: 0,
          }).then((r) => r.choices[0].text);
        const solo: string[] = [];
        for (const [i, p] of prompts.entries()) solo.push(await run(p, i));
        const before = await passesAndTokens(main);
        const together = await Promise.all(prompts.map(run));
        const after = await passesAndTokens(main);
        assertEquals(together, solo);
        // They shared forward passes: far fewer passes than tokens produced.
        const passes = after.passes - before.passes;
        const tokens = after.tokens - before.tokens;
        assert(passes * 3 < tokens, `${passes} passes for ${tokens} tokens`);
        assertEquals(new Set(solo).size, 16, "the prompts give different outputs");
      });

      await t.step("a client that disconnects mid-stream frees its slot", async () => {
        const ctl = new AbortController();
        const stream = await api.completions.create({
          model: "stories260K",
          prompt: "Once upon a time",
          max_tokens: 500,
          temperature: 0,
          stream: true,
        }, { signal: ctl.signal });
        const it = stream[Symbol.asyncIterator]();
        await it.next();
        const busy = await health(main);
        assertEquals(busy.requests.active, 1);
        assertEquals(busy.kv_cache.used, 1);
        ctl.abort();
        await it.next().catch(() => {});
        const free = await waitHealth(
          main,
          (h) =>
            (h.requests as { active: number }).active === 0 &&
            (h.kv_cache as { used: number }).used === 0,
        );
        assertEquals(free.kv_cache, { used: 0, free: 16, total: 16 });
      });

      await t.step("400 bad JSON and n=2, 401 wrong key, 404 unknown model, 413", async () => {
        const res = await fetch(`http://127.0.0.1:${main.httpPort}/v1/chat/completions`, {
          method: "POST",
          headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
          body: '{"model": "stories260K", "messages": [',
        });
        assertEquals(res.status, 400);
        assert((await res.json()).error.message.includes("not valid JSON"));
        const n2 = await apiError(api.chat.completions.create({
          model: "stories260K",
          messages: [{ role: "user", content: "Hi" }],
          n: 2,
        }));
        assertEquals(n2.status, 400);
        assert(n2.message.includes("n must be 1"), n2.message);
        const auth = await apiError(client(main, "sk-wrong").models.list());
        assertEquals([auth.status, auth.code], [401, "invalid_api_key"]);
        const model = await apiError(
          api.completions.create({ model: "llama-70b", prompt: "Hi", max_tokens: 4 }),
        );
        assertEquals([model.status, model.code], [404, "model_not_found"]);
        assert(model.message.includes("stories260K.gguf"), model.message);
        const long = await apiError(
          api.completions.create({ model: "stories260K", prompt: "Once upon ".repeat(300) }),
        );
        assertEquals([long.status, long.code], [413, "context_length_exceeded"]);
        assert(/the context holds 512/.test(long.message), long.message);
      });

      await t.step("429 (and RPC RESOURCE_EXHAUSTED) when slots and queue are full", async () => {
        const tinyApi = client(tiny);
        const ctl = new AbortController();
        const stream = await tinyApi.completions.create({
          model: "stories260K",
          prompt: "Once upon a time",
          max_tokens: 240,
          temperature: 0,
          stream: true,
        }, { signal: ctl.signal });
        const it = stream[Symbol.asyncIterator]();
        await it.next();
        const full = await apiError(
          tinyApi.completions.create({ model: "stories260K", prompt: "Hi", max_tokens: 2 }),
        );
        assertEquals([full.status, full.code], [429, "queue_full"]);
        assert(full.message.includes("--max-requests"), full.message);
        let code: Code | undefined;
        try {
          await generate(tiny, "Hi", 2);
        } catch (e) {
          code = ConnectError.from(e).code;
        }
        assertEquals(code, Code.ResourceExhausted);
        ctl.abort();
        await it.next().catch(() => {});
        await waitHealth(tiny, (h) => (h.requests as { active: number }).active === 0);
        const ok = await tinyApi.completions.create({
          model: "stories260K",
          prompt: "Hi",
          max_tokens: 2,
        });
        assertEquals(ok.usage?.completion_tokens, 2);
      });

      await t.step("503 when the cluster has no placement", async () => {
        const h = await waitHealth(small, (h) => h.status === "no_placement");
        assert(String(h.detail).includes("cannot hold the model"), String(h.detail));
        const err = await apiError(
          client(small).chat.completions.create({
            model: "stories260K",
            messages: [{ role: "user", content: "Hi" }],
          }),
        );
        assertEquals([err.status, err.code], [503, "no_placement"]);
        assert(err.message.includes("no placement"), err.message);
      });
    } finally {
      await stopAll(agents);
    }
  },
});

Deno.test("errors quoting a huge request stay under 1 KiB over HTTP and RPC", async () => {
  const agent = await startAgent({ id: "solo", model: STORIES, memoryBudget: "8MB" });
  try {
    const name = "m".repeat(500_000);
    const res = await fetch(`http://127.0.0.1:${agent.httpPort}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: name, prompt: "hi", max_tokens: 1 }),
    });
    const body = await res.json();
    assertEquals(res.status, 404, JSON.stringify(body).slice(0, 300));
    const message = body.error.message as string;
    assert(message.startsWith("model mmm"), message.slice(0, 300));
    assert(new TextEncoder().encode(message).length <= 1024, `${message.length} bytes`);
    const rpc = await generate(agent, "hi", 1, { model: name }).then(() => null, (e) => e);
    assert(rpc instanceof ConnectError, String(rpc));
    assertEquals(rpc.code, Code.NotFound);
    assert(
      new TextEncoder().encode(rpc.rawMessage).length <= 1024,
      `${rpc.rawMessage.length} bytes`,
    );
  } finally {
    await stopAll([agent]);
  }
});
