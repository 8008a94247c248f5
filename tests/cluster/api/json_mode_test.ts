/**
 * response_format (json_object, json_schema) and token-array prompts through the HTTP API and the
 * official `openai` client, answered by a generator that samples in process with the request's
 * settings (a whole-model stage of a fixture model and model/sampler's JSON constraint).
 */
import OpenAI from "openai";
import {
  type GenerationEvent,
  type GenerationParams,
  startApiServer,
  type TextGenerator,
} from "../../../cluster/api/mod.ts";
import { jsonConstraintFor } from "../../../model/constrain/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";
import { FIXTURES } from "../../support/paths.ts";
import { generateLocal, loadLocalModel, type LocalModel } from "../../model/constrain/generate.ts";

/** Samples in process: the settings (JSON constraint included) built as a tail stage gets them. */
class LocalGenerator implements TextGenerator {
  features = { json: true, promptTokens: true };
  last?: GenerationParams;
  constructor(private readonly m: LocalModel, readonly withFeatures = true) {
    if (!withFeatures) this.features = { json: false, promptTokens: false };
  }
  models() {
    return [{ id: "tiny-f32.gguf", created: 1, contextLength: 256 }];
  }
  health() {
    return { status: "ok" };
  }
  async *generate(p: GenerationParams): AsyncIterable<GenerationEvent> {
    this.last = p;
    const tok = this.m.tokenizer;
    const prompt = p.promptTokens ?? tok.encode(p.prompt ?? p.messages!.at(-1)!.content);
    const r = await generateLocal(this.m, prompt, p.maxTokens ?? 200, {
      temperature: p.temperature,
      topP: p.topP,
      topK: p.topK,
      minP: p.minP,
      seed: p.seed === undefined ? undefined : Number(p.seed & 0xffffffffn),
      json: p.json ? jsonConstraintFor(tok, p.json, prompt.length) : undefined,
    });
    yield {
      kind: "done",
      text: r.text,
      finishReason: r.finishReason,
      promptTokens: prompt.length,
      completionTokens: r.tokens.length,
    };
  }
}

async function withApi(
  fn: (client: OpenAI, gen: LocalGenerator, base: string) => Promise<void>,
  features = true,
) {
  const m = await loadLocalModel(`${FIXTURES}/models/tiny-f32.gguf`);
  const gen = new LocalGenerator(m, features);
  const api = await startApiServer({ port: 0, generator: gen });
  const base = `http://127.0.0.1:${api.port}`;
  try {
    await fn(new OpenAI({ baseURL: `${base}/v1`, apiKey: "none", maxRetries: 0 }), gen, base);
  } finally {
    await api.close();
    m.close();
  }
}

Deno.test("openai client: response_format json_object, 50 seeds at temperature 1: every answer parses or says length", async () => {
  await withApi(async (client) => {
    let complete = 0;
    for (let seed = 1; seed <= 50; seed++) {
      const r = await client.chat.completions.create({
        model: "tiny-f32",
        messages: [{ role: "user", content: "Answer in JSON" }],
        response_format: { type: "json_object" },
        temperature: 1,
        seed,
        max_tokens: 200,
      });
      const choice = r.choices[0];
      if (choice.finish_reason === "length") continue;
      assertEquals(choice.finish_reason, "stop");
      const v = JSON.parse(choice.message.content!);
      assert(typeof v === "object" && v !== null && !Array.isArray(v));
      complete++;
    }
    assert(complete >= 20, `only ${complete} of 50 completed`);
  });
});

Deno.test("openai client: response_format json_schema gives objects of the schema", async () => {
  await withApi(async (client) => {
    const schema = {
      type: "object",
      properties: {
        mood: { enum: ["happy", "sad"] },
        n: { type: "integer" },
        ok: { type: "boolean" },
      },
      required: ["mood", "n", "ok"],
      additionalProperties: false,
    };
    let complete = 0;
    for (let seed = 1; seed <= 10; seed++) {
      // The SDK types response_format for chat only; completions take it here as in llama.cpp.
      const body = {
        model: "tiny-f32",
        prompt: "Hello",
        response_format: { type: "json_schema", json_schema: { name: "m", schema, strict: true } },
        temperature: 1,
        top_p: 1,
        seed,
        max_tokens: 150,
      };
      const r = await client.completions.create(body as OpenAI.CompletionCreateParamsNonStreaming);
      if (r.choices[0].finish_reason === "length") continue;
      const v = JSON.parse(r.choices[0].text);
      assertEquals(Object.keys(v), ["mood", "n", "ok"]);
      assert(
        ["happy", "sad"].includes(v.mood) && Number.isInteger(v.n) && typeof v.ok === "boolean",
      );
      complete++;
    }
    assert(complete >= 5, `only ${complete} of 10 completed`);
  });
});

Deno.test("response_format: a schema outside the subset, or an unknown type, is a 400 naming it", async () => {
  await withApi(async (_client, _gen, base) => {
    const post = async (response_format: unknown) => {
      const res = await fetch(`${base}/v1/completions`, {
        method: "POST",
        body: JSON.stringify({ model: "tiny-f32", prompt: "Hi", response_format }),
      });
      return { status: res.status, body: await res.json() };
    };
    const pattern = await post({
      type: "json_schema",
      json_schema: {
        name: "x",
        schema: { type: "object", properties: { a: { type: "string", pattern: "a+" } } },
      },
    });
    assertEquals(pattern.status, 400);
    assertEquals(pattern.body.error.param, "response_format.json_schema.schema");
    assert(
      /"pattern" is not supported/.test(pattern.body.error.message),
      pattern.body.error.message,
    );
    const noSchema = await post({ type: "json_schema", json_schema: { name: "x" } });
    assertEquals(noSchema.status, 400);
    const other = await post({ type: "grammar" });
    assertEquals([other.status, other.body.error.param], [400, "response_format"]);
    assertEquals((await post({ type: "text" })).status, 200);
  });
});

Deno.test("a generator without JSON constraints or token prompts gets a 400, never free text", async () => {
  await withApi(async (_client, _gen, base) => {
    const post = async (body: Record<string, unknown>) => {
      const res = await fetch(`${base}/v1/completions`, {
        method: "POST",
        body: JSON.stringify({ model: "tiny-f32", prompt: "Hi", ...body }),
      });
      return { status: res.status, body: await res.json() };
    };
    const json = await post({ response_format: { type: "json_object" } });
    assertEquals([json.status, json.body.error.param], [400, "response_format"]);
    const ids = await post({ prompt: [1, 2, 3] });
    assertEquals([ids.status, ids.body.error.param], [400, "prompt"]);
  }, false);
});

Deno.test("/v1/completions takes prompts as token ids (number[] and number[][] of one prompt)", async () => {
  await withApi(async (client, gen, base) => {
    const a = await client.completions.create({
      model: "tiny-f32",
      prompt: [1, 20, 30],
      max_tokens: 3,
      temperature: 0,
    });
    assertEquals(gen.last?.promptTokens, [1, 20, 30]);
    assertEquals(gen.last?.prompt, undefined);
    assertEquals(a.usage?.prompt_tokens, 3);
    const b = await client.completions.create({
      model: "tiny-f32",
      prompt: [[1, 20, 30]],
      max_tokens: 3,
      temperature: 0,
    });
    assertEquals(gen.last?.promptTokens, [1, 20, 30]);
    // The same ids give the same greedy text as the first request.
    assertEquals(b.choices[0].text, a.choices[0].text);
    const post = async (prompt: unknown) => {
      const res = await fetch(`${base}/v1/completions`, {
        method: "POST",
        body: JSON.stringify({ model: "tiny-f32", prompt }),
      });
      return { status: res.status, body: await res.json() };
    };
    for (const bad of [[1.5], [-1], [], [[1], "a", 3], [[]], {}]) {
      const r = await post(bad);
      assertEquals([r.status, r.body.error.param], [400, "prompt"], JSON.stringify(bad));
    }
  });
});

Deno.test("/v1/completions with several prompts answers one choice per prompt, in order", async () => {
  await withApi(async (client, _gen, base) => {
    const one = await client.completions.create({
      model: "tiny-f32",
      prompt: [1, 20, 30],
      max_tokens: 3,
      temperature: 0,
    });
    const many = await client.completions.create({
      model: "tiny-f32",
      prompt: [[1, 20, 30], [1, 40], [1, 20, 30]],
      max_tokens: 3,
      temperature: 0,
    });
    assertEquals(many.choices.map((c) => c.index), [0, 1, 2]);
    assertEquals(many.choices[0].text, one.choices[0].text);
    assertEquals(many.choices[2].text, one.choices[0].text);
    assertEquals(many.usage?.prompt_tokens, 8);
    const texts = await client.completions.create({
      model: "tiny-f32",
      prompt: ["Hello", "Hi"],
      max_tokens: 2,
      temperature: 0,
    });
    assertEquals(texts.choices.length, 2);
    const post = async (body: Record<string, unknown>) => {
      const res = await fetch(`${base}/v1/completions`, {
        method: "POST",
        body: JSON.stringify({ model: "tiny-f32", ...body }),
      });
      return { status: res.status, body: await res.json() };
    };
    const streamed = await post({ prompt: ["a", "b"], stream: true });
    assertEquals([streamed.status, streamed.body.error.param], [400, "stream"]);
    const tooMany = await post({ prompt: Array(65).fill("a") });
    assertEquals([tooMany.status, tooMany.body.error.param], [400, "prompt"]);
  });
});
