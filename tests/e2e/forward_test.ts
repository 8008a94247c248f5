/**
 * An agent started with --no-model passes requests on (cluster/agent/forward_*.ts): two agents
 * serve stories260K behind an API key and a third, serving none, is the gateway. Generate over
 * gRPC (a chat with template variables included) and chat over HTTP (streamed and not, with
 * logprobs) give through it exactly what a serving agent gives directly; the serving agent's API
 * key holds through the proxy; Cancel by request id reaches the serving agent; a request already
 * forwarded is not forwarded again; the serving agents killed mid-stream give the client a clean
 * error (an SSE error event, gRPC UNAVAILABLE), not a hang.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { FinishReason, type GenerateResponse, InferenceService } from "../../proto/mod.ts";
import { assert, assertEquals } from "../support/assert.ts";
import {
  type AgentProcess,
  startAgent,
  startCluster,
  stopAll,
  waitForPlacement,
} from "../support/agents.ts";
import { STORIES } from "../support/paths.ts";

const KEY = "sk-forward-key";
/** stories260K's end of sequence, banned so generations run as long as a test needs. */
const EOS = 2;

/** POST `body` to `path` of `a`'s HTTP API. */
function post(
  a: AgentProcess,
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
  signal?: AbortSignal,
) {
  return fetch(`http://127.0.0.1:${a.httpPort}${path}`, {
    method: "POST",
    signal,
    headers: { "content-type": "application/json", authorization: `Bearer ${KEY}`, ...headers },
    body: JSON.stringify(body),
  });
}

/** Every message of a Generate call. */
async function generateAll(
  a: AgentProcess,
  req: Record<string, unknown>,
  headers: Record<string, string> = {},
): Promise<GenerateResponse[]> {
  const out: GenerateResponse[] = [];
  for await (const m of createClient(InferenceService, a.transport).generate(req, { headers })) {
    out.push(m);
  }
  return out;
}

/** The SSE `data:` payloads of a streamed answer, parsed ([DONE] as the string). */
async function sseEvents(res: Response): Promise<unknown[]> {
  const text = await res.text();
  return text.split("\n").filter((l) => l.startsWith("data: ")).map((l) => {
    const d = l.slice(6);
    return d === "[DONE]" ? d : JSON.parse(d);
  });
}

/** The gateway's forwarded-request counter for `api`. */
async function forwarded(a: AgentProcess, api: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${a.metricsPort}/metrics`)).text();
  const line = text.split("\n").find((l) =>
    l.startsWith(`distributed_llm_forwarded_requests_total{`) && l.includes(`api="${api}"`)
  );
  assert(line, "no distributed_llm_forwarded_requests_total series");
  return Number(line.split(" ").at(-1));
}

/** Wait for `p` within `ms`, or fail naming `what` (a hang must fail the test, not stall it). */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no end within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test({
  name: "a --no-model agent forwards gRPC and HTTP requests to the agents that serve the model",
  fn: async (t) => {
    const serving = await startCluster(["fa", "fb"], {
      model: STORIES,
      extra: ["--api-key", KEY, "--context-size", "512"],
    });
    const agents = [...serving];
    try {
      await waitForPlacement(serving[0], 2);
      const gw = await startAgent({
        id: "fgw",
        seeds: [serving[0].gossipAddr],
        extra: ["--no-model"],
      });
      agents.push(gw);
      // The gateway forwards once its gossip shows a serving agent.
      for (let i = 0;; i++) {
        const r = await fetch(`http://127.0.0.1:${gw.httpPort}/v1/models`, {
          headers: { authorization: `Bearer ${KEY}` },
        });
        const body = await r.json();
        if (r.status === 200 && body.data?.length) break;
        assert(i < 300, `the gateway never listed a model: ${JSON.stringify(body)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      const [a] = serving;

      await t.step("gRPC Generate through the gateway equals the serving agent's", async () => {
        const before = await forwarded(gw, "grpc");
        const prompt = {
          prompt: "Once upon a time",
          maxTokens: 24,
          sampler: { temperature: 0, logitBias: { [EOS]: -100 } },
        };
        const direct = await generateAll(a, prompt);
        const via = await generateAll(gw, prompt);
        assertEquals(via.map((m) => m.tokenId), direct.map((m) => m.tokenId));
        assertEquals(via.map((m) => m.text).join(""), direct.map((m) => m.text).join(""));
        assertEquals(via.at(-1)?.finishReason, FinishReason.LENGTH);
        assertEquals(via.at(-1)?.usage?.completionTokens, 24);
        // A chat with template variables and stop strings: every field reaches the serving agent.
        const chat = {
          messages: [{ role: "user", content: "Tell me a story about a cat." }],
          chatTemplateKwargsJson: JSON.stringify({ enable_thinking: false }),
          maxTokens: 20,
          stop: ["zzz"],
          sampler: { temperature: 0.7, seed: 42n, topLogprobs: 2 },
        };
        const chatDirect = await generateAll(a, chat);
        const chatVia = await generateAll(gw, chat);
        assertEquals(chatVia.map((m) => m.tokenId), chatDirect.map((m) => m.tokenId));
        assertEquals(
          chatVia.map((m) => m.topLogprobs.map((l) => l.tokenId)),
          chatDirect.map((m) => m.topLogprobs.map((l) => l.tokenId)),
        );
        assertEquals(chatVia.at(-1)?.usage?.promptTokens, chatDirect.at(-1)?.usage?.promptTokens);
        // A bad argument is the serving agent's answer, code and all.
        const bad = await generateAll(gw, { prompt: "x", messages: [{ role: "user" }] })
          .then(() => null, (e) => ConnectError.from(e));
        assertEquals(bad?.code, Code.InvalidArgument, `${bad}`);
        assertEquals(await forwarded(gw, "grpc"), before + 3);
      });

      await t.step(
        "HTTP chat through the gateway, streamed and not, equals the direct answer",
        async () => {
          const before = await forwarded(gw, "http");
          const body = {
            model: "stories260K",
            messages: [{ role: "user", content: "Once upon a time" }],
            max_tokens: 24,
            temperature: 0,
            logprobs: true,
            top_logprobs: 2,
            logit_bias: { [EOS]: -100 },
          };
          const direct = await (await post(a, "/v1/chat/completions", body)).json();
          const res = await post(gw, "/v1/chat/completions", body);
          assertEquals(res.status, 200);
          const via = await res.json();
          assertEquals(via.choices, direct.choices);
          assertEquals(via.usage, direct.usage);
          const streamed = async (x: AgentProcess) => {
            const r = await post(x, "/v1/chat/completions", { ...body, stream: true });
            assertEquals(r.status, 200);
            assert(r.headers.get("content-type")?.startsWith("text/event-stream"));
            const events = await sseEvents(r);
            assertEquals(events.at(-1), "[DONE]");
            return events.slice(0, -1).map((e) =>
              (e as { choices: { delta: unknown; logprobs: unknown }[] }).choices.map((c) => [
                c.delta,
                c.logprobs,
              ])
            );
          };
          assertEquals(await streamed(gw), await streamed(a));
          assertEquals(await forwarded(gw, "http"), before + 2);
        },
      );

      await t.step("the serving agents' API key holds through the gateway", async () => {
        const body = { model: "stories260K", prompt: "Hi", max_tokens: 2 };
        const missing = await post(gw, "/v1/completions", body, { authorization: "" });
        assertEquals(missing.status, 401);
        assert((await missing.text()).includes("missing API key"));
        const wrong = await post(gw, "/v1/completions", body, { authorization: "Bearer nope" });
        assertEquals(wrong.status, 401);
        assert((await wrong.text()).includes("incorrect API key"));
        const ok = await post(gw, "/v1/completions", body);
        assertEquals(ok.status, 200, await ok.clone().text());
        assertEquals((await ok.json()).usage.completion_tokens, 2);
      });

      await t.step("Cancel by request id on the gateway reaches the serving agent", async () => {
        const client = createClient(InferenceService, gw.transport);
        const stream = client.generate({
          prompt: "Once upon a time",
          requestId: "fwd-cancel",
          sampler: { temperature: 0, logitBias: { [EOS]: -100 } },
        });
        let last: GenerateResponse | undefined;
        let cancelled = false;
        for await (const m of stream) {
          last = m;
          if (!cancelled) {
            cancelled = true;
            assert((await client.cancel({ requestId: "fwd-cancel" })).cancelled);
          }
        }
        assertEquals(last?.finishReason, FinishReason.CANCELLED);
      });

      await t.step("a request already forwarded is not forwarded again", async () => {
        const grpc = await forwarded(gw, "grpc");
        const http = await forwarded(gw, "http");
        const loop = { "x-dllm-forwarded-by": "another-gateway" };
        const e = await generateAll(gw, { prompt: "Hi", maxTokens: 2 }, loop)
          .then(() => null, (e) => ConnectError.from(e));
        assertEquals(e?.code, Code.Unavailable, `${e}`);
        assert(e!.rawMessage.includes("fgw serves no model"), e!.rawMessage);
        const r = await post(gw, "/v1/completions", {
          model: "stories260K",
          prompt: "Hi",
          max_tokens: 2,
        }, loop);
        assertEquals(r.status, 503);
        assert((await r.text()).includes("fgw serves no model"));
        assertEquals(await forwarded(gw, "grpc"), grpc);
        assertEquals(await forwarded(gw, "http"), http);
      });

      await t.step("a client leaving the gateway ends the generation where it runs", async () => {
        /** Summed over the serving agents: one series of their /metrics. */
        const sum = async (metric: string) => {
          let n = 0;
          for (const s of serving) {
            const text = await (await fetch(`http://127.0.0.1:${s.metricsPort}/metrics`)).text();
            const line = text.split("\n").find((l) => l.startsWith(`${metric} `));
            n += Number(line?.split(" ").at(-1) ?? 0);
          }
          return n;
        };
        const active = () => sum("distributed_llm_requests_active");
        const tokens = () => sum("distributed_llm_tokens_generated_total");
        const settle = async (want: number, what: string) => {
          for (let i = 0; (await active()) !== want; i++) {
            assert(i < 100, `${what}: ${await active()} requests active on the serving agents`);
            await new Promise((r) => setTimeout(r, 50));
          }
        };
        // Each generation would run 400 (HTTP) or ~500 (gRPC) tokens if nothing stopped it.
        const before = await tokens();
        const http = new AbortController();
        const sse = await post(
          gw,
          "/v1/completions",
          {
            model: "stories260K",
            prompt: "Once upon a time",
            max_tokens: 400,
            stream: true,
            logit_bias: { [EOS]: -100 },
          },
          {},
          http.signal,
        );
        const reader = sse.body!.getReader();
        await reader.read();
        await settle(1, "the HTTP request runs");
        http.abort();
        await reader.cancel().catch(() => {});
        await settle(0, "the HTTP client left");
        const afterHttp = await tokens();
        assert(afterHttp - before < 400, `the HTTP request ran on: ${afterHttp - before} tokens`);
        const grpc = new AbortController();
        const stream = createClient(InferenceService, gw.transport).generate({
          prompt: "Once upon a time",
          sampler: { logitBias: { [EOS]: -100 } },
        }, { signal: grpc.signal })[Symbol.asyncIterator]();
        await stream.next();
        await settle(1, "the Generate call runs");
        grpc.abort();
        await stream.next().catch(() => {});
        await settle(0, "the gRPC client left");
        const afterGrpc = await tokens();
        assert(afterGrpc - afterHttp < 400, `Generate ran on: ${afterGrpc - afterHttp} tokens`);
      });

      await t.step("the serving agents killed mid-stream: a clean error, not a hang", async () => {
        const sse = await post(gw, "/v1/completions", {
          model: "stories260K",
          prompt: "Once upon a time",
          max_tokens: 400,
          temperature: 0,
          stream: true,
          logit_bias: { [EOS]: -100 },
        });
        assertEquals(sse.status, 200);
        const reader = sse.body!.pipeThrough(new TextDecoderStream()).getReader();
        let text = "";
        while (!text.includes("data: {")) text += (await reader.read()).value ?? "";
        const grpc = createClient(InferenceService, gw.transport).generate({
          prompt: "Once upon a time",
          sampler: { temperature: 0, logitBias: { [EOS]: -100 } },
        })[Symbol.asyncIterator]();
        assert(!(await grpc.next()).done);
        for (const s of serving) s.child.kill("SIGKILL");
        const rest = (async () => {
          for (;;) {
            const { value, done } = await reader.read();
            if (done) return text;
            text += value;
          }
        })();
        const all = await within(rest, 20_000, "the SSE stream");
        assert(!all.includes("[DONE]"), "a stream cut off must not end as if complete");
        const error = all.split("\n").filter((l) => l.startsWith("data: {")).map((l) =>
          JSON.parse(l.slice(6))
        ).find((e) => e.error);
        assert(error, `no error event in ${all.slice(-400)}`);
        assert(error.error.message.includes("forwarded this request"), error.error.message);
        const drained = (async () => {
          for (;;) if ((await grpc.next()).done) return null;
        })().then(() => null, (e) => ConnectError.from(e));
        const failed = await within(drained, 20_000, "the Generate stream");
        assertEquals(failed?.code, Code.Unavailable, `${failed}`);
      });
    } finally {
      await stopAll(agents);
    }
  },
});
