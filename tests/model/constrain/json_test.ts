/**
 * JSON-constrained sampling: the byte recogniser against valid and invalid documents, the JSON
 * Schema subset, token masks, and 50 sampled generations of a real fixture model that all parse.
 */
import { assert, assertEquals, assertThrows } from "../../support/assert.ts";
import { FIXTURES, SHARED } from "../../support/paths.ts";
import {
  ANY,
  ANY_OBJECT,
  compileJsonSchema,
  decodeJsonConstraint,
  encodeJsonConstraint,
  initialState,
  isComplete,
  JsonConstraint,
  JsonConstraintError,
  jsonConstraintFor,
  JsonSchemaError,
  type JsonState,
  type SchemaNode,
  step,
} from "../../../model/constrain/mod.ts";
import { Sampler, SamplerParamError } from "../../../model/sampler.ts";
import { loadTokenizer } from "../tokenizer/helpers.ts";
import { generateLocal, loadLocalModel } from "./generate.ts";

/** Feed `text`; the state after it, or null where a byte was refused. */
function run(schema: SchemaNode, text: string): JsonState | null {
  let s: JsonState | null = initialState(schema);
  for (const b of new TextEncoder().encode(text)) {
    s = step(s, b);
    if (!s) return null;
  }
  return s;
}
const accepts = (schema: SchemaNode, text: string) => {
  const s = run(schema, text);
  return s !== null && isComplete(s);
};

Deno.test("the recogniser accepts valid JSON objects and completes exactly at their end", () => {
  for (
    const doc of [
      "{}",
      ' { "a" : 1 }',
      '{"a":[1,2.5,-0.5e+3,true,false,null,"x"],"b":{"c":{}}}',
      '{"s":"esc \\" \\\\ \\/ \\b\\f\\n\\r\\t \\u00e9 é 😀 中"}',
      '{\n  "a": [\n    {}\n  ]\n}',
      '{"n":-0,"m":0.0,"e":1E9}',
    ]
  ) {
    assert(accepts(ANY_OBJECT, doc), doc);
    JSON.parse(doc); // the test's own check: each is valid JSON
    // Nothing may follow the closing brace.
    assertEquals(run(ANY_OBJECT, doc + " "), null, doc);
  }
  assert(!isComplete(run(ANY_OBJECT, '{"a":1')!), "an open object is not complete");
});

Deno.test("the recogniser refuses what JSON.parse refuses", () => {
  for (
    const doc of [
      "[]", // the root must be an object
      "{,}",
      '{"a"}',
      '{"a":}',
      '{"a":1,}',
      '{"a":01}',
      '{"a":1.}',
      '{"a":.5}',
      '{"a":+1}',
      '{"a":tru}',
      '{"a":"\u0001"}',
      '{"a":"\\x"}',
      '{"a":"\\u12g4"}',
      "{'a':1}",
      '{"a":1}}',
      '{"a":[1,]}',
    ]
  ) {
    assert(!accepts(ANY_OBJECT, doc), doc);
    let parses = true;
    try {
      const v = JSON.parse(doc);
      parses = typeof v === "object" && v !== null && !Array.isArray(v);
    } catch {
      parses = false;
    }
    assertEquals(parses, false, doc);
  }
});

Deno.test("invalid UTF-8 inside strings is refused byte by byte", () => {
  const bytes = (xs: number[]) => {
    let s: JsonState | null = initialState(ANY_OBJECT);
    for (const b of [0x7b, 0x22, ...xs]) s = s && step(s, b);
    return s;
  };
  assert(bytes([0xc3, 0xa9]) !== null); // é
  assertEquals(bytes([0xc0, 0x80]), null); // overlong
  assertEquals(bytes([0xed, 0xa0, 0x80]), null); // a UTF-16 surrogate
  assertEquals(bytes([0xf4, 0x90, 0x80, 0x80]), null); // past U+10FFFF
  assertEquals(bytes([0x80]), null); // a lone continuation byte
});

Deno.test("whitespace runs are llama.cpp's space rule: one space, or 1-2 newlines and 20 blanks", () => {
  assert(accepts(ANY_OBJECT, '{\n    "a": 1\n}'));
  assert(accepts(ANY_OBJECT, '{ "a": [1, 2], "b": {\n\n\t"c": true} }'));
  assert(accepts(ANY_OBJECT, "{\n" + " ".repeat(20) + '"a": 1}'));
  assertEquals(run(ANY_OBJECT, "{\n" + " ".repeat(21)), null);
  assertEquals(run(ANY_OBJECT, "{\n\n\n"), null);
  assertEquals(run(ANY_OBJECT, "{  "), null);
  assertEquals(run(ANY_OBJECT, "{ \n"), null);
  assertEquals(run(ANY_OBJECT, "{\n  \n"), null);
  assertEquals(run(ANY_OBJECT, "{\t"), null);
  assertEquals(run(ANY_OBJECT, "{\r\n"), null);
  // The document starts with its value, after one space at most: a small model spent
  // max_tokens on " \n   ..." before the "{" (found by an independent tester).
  assert(accepts(ANY_OBJECT, ' {"a": 1}'));
  assertEquals(run(ANY_OBJECT, "  "), null);
  assertEquals(run(ANY_OBJECT, " \n"), null);
  assertEquals(run(ANY_OBJECT, "\n{"), null);
});

Deno.test("schemas: required properties in order, enums, types; other documents refused", () => {
  const schema = compileJsonSchema({
    type: "object",
    properties: {
      name: { type: "string", description: "ignored" },
      age: { type: "integer" },
      mood: { enum: ["happy", "sad", 1, null] },
      tags: { type: "array", items: { type: "string" } },
      note: { type: ["string", "null"] },
    },
    required: ["name", "age", "mood"],
    additionalProperties: false,
  });
  assert(accepts(schema, '{"name":"Tom","age":3,"mood":"sad"}'));
  assert(accepts(schema, '{"name":"Tom","age":-3,"mood":1,"tags":["a","b"],"note":null}'));
  assert(accepts(schema, '{"name":"","age":0,"mood":null,"note":"x"}'));
  for (
    const bad of [
      '{"age":3,"name":"Tom","mood":"sad"}', // out of order
      '{"name":"Tom","mood":"sad"}', // a required property left out
      '{"name":"Tom","age":3.5,"mood":"sad"}', // not an integer
      '{"name":"Tom","age":3,"mood":"glad"}', // not in the enum
      '{"name":"Tom","age":3,"mood":"sad","extra":1}', // additional property
      '{"name":1,"age":3,"mood":"sad"}',
      '{"name":"Tom","age":3,"mood":"sad","tags":[1]}',
    ]
  ) assert(!accepts(schema, bad), bad);
});

Deno.test("an enum with its type, as OpenAI's own examples write it; a value the type refuses is an error", () => {
  // {"type": "string", "enum": [...]} was refused in response_format, and a forced tool call with
  // it fell back to any object.
  const schema = compileJsonSchema({
    type: "object",
    properties: {
      unit: { type: "string", enum: ["celsius", "fahrenheit"] },
      n: { type: ["integer", "null"], enum: [1, 2, null] },
    },
    required: ["unit", "n"],
    additionalProperties: false,
  });
  assert(accepts(schema, '{"unit":"celsius","n":2}'));
  assert(accepts(schema, '{"unit":"fahrenheit","n":null}'));
  assert(!accepts(schema, '{"unit":"kelvin","n":1}'));
  assert(!accepts(schema, '{"unit":"celsius","n":3}'));
  assertThrows(
    () =>
      compileJsonSchema({
        type: "object",
        properties: { u: { type: "string", enum: ["a", 1] } },
      }),
    Error,
    '1 is not of type "string"',
  );
});

Deno.test("unsupported JSON Schema keywords are refused with their name and path", () => {
  const cases: [unknown, RegExp][] = [
    [{ type: "string" }, /root must be an object/],
    [
      { type: "object", properties: { a: { type: "string", pattern: "x" } } },
      /properties\.a.*"pattern"/,
    ],
    [{ $ref: "#/defs/x" }, /"\$ref" is not supported/],
    [{ anyOf: [] }, /"anyOf" is not supported/],
    [{ type: "object", properties: { a: { type: "date" } } }, /unknown type "date"/],
    [{ type: "object", required: ["b"], properties: { a: true } }, /names "b"/],
    [{ type: "object", properties: { a: { type: ["object", "null"] } } }, /only string, number/],
  ];
  for (const [schema, why] of cases) {
    const e = assertThrows(() => compileJsonSchema(schema), JsonSchemaError);
    assert(why.test(e.message), `${e.message} !~ ${why}`);
  }
  assertEquals(compileJsonSchema({ type: "object" }), ANY_OBJECT);
  assertEquals(compileJsonSchema({ type: "object", properties: { a: {} } }), {
    kind: "object",
    props: [{ name: "a", schema: ANY, required: false }],
  });
});

Deno.test("a mask allows exactly the tokens whose bytes continue the value", async () => {
  for (const vocab of ["llama-spm", "qwen2"]) {
    const tok = await loadTokenizer(`vocab/ggml-vocab-${vocab}.gguf`);
    const c = new JsonConstraint(jsonConstraintFor(tok, ANY_OBJECT));
    for (const id of tok.encode('{"a": [1', { addBos: false })) c.accept(id);
    // Brute force over the whole vocabulary: the trie walk must agree token for token.
    const state = run(ANY_OBJECT, '{"a": [1')!;
    let allowed = 0;
    for (let id = 0; id < tok.vocabSize; id++) {
      const bytes = tok.tokenPiece(id, false);
      let s: JsonState | null = bytes.length ? state : null;
      for (const b of bytes) s = s && step(s, b);
      assertEquals(c.allows(id), s !== null, `${vocab} token ${id} ${tok.tokenText(id)}`);
      if (s) allowed++;
    }
    assert(allowed > 10, `${vocab}: ${allowed} tokens may continue`);
    // Once complete, only end-of-generation tokens.
    for (const id of tok.encode("]}", { addBos: false })) c.accept(id);
    assert(c.complete);
    const eog = [...Array(tok.vocabSize).keys()].filter((id) => c.allows(id));
    assertEquals(eog, tok.eogIds);
  }
});

Deno.test("additionalProperties false without properties: only the empty object", () => {
  const schema = compileJsonSchema({ type: "object", additionalProperties: false });
  assert(accepts(schema, "{}"));
  assert(accepts(schema, " { }"));
  // Before, it compiled to "any object" and the output could break the schema.
  assert(!accepts(schema, '{"x": 1}'));
});

Deno.test("a number never reaches a state nothing can continue (the mask's dead end)", () => {
  // 31 bytes, then "e" took the 32nd and last byte: the next mask was empty and the request
  // failed mid-output. Now such a byte is refused where no digit could follow it.
  const base = `${"1".repeat(16)}.${"1".repeat(14)}`;
  for (const tail of ["e", "E"]) assertEquals(run(ANY_OBJECT, `{"n": ${base}${tail}`), null);
  assert(accepts(ANY_OBJECT, `{"n": ${base}1}`), "32 bytes still fit");
  const e = `${"1".repeat(16)}.${"1".repeat(11)}e-`;
  assertEquals(run(ANY_OBJECT, `{"n": ${e}5`) !== null, true, "30 bytes then a digit");
  assertEquals(
    run(ANY_OBJECT, `{"n": ${"1".repeat(16)}.${"1".repeat(13)}e-`),
    null,
    "the sign takes the last byte",
  );
});

Deno.test("a number's integral part, fraction and exponent hold at most 16 digits each", () => {
  // Before, a model that liked digits wrote a 32-digit "integer" no reader holds, or ran a
  // forced tool call's argument on until max_tokens (found by an independent tester). The bound
  // is llama.cpp's json grammar's: [1-9] [0-9]{0,15} and [0-9]{1,16}.
  const d = (n: number) => "9".repeat(n);
  const integer = compileJsonSchema({ type: "object", properties: { n: { type: "integer" } } });
  for (
    const [text, ok] of [
      [`{"n": ${d(16)}}`, true],
      [`{"n": ${d(17)}}`, false],
      [`{"n": -${d(16)}}`, true],
      [`{"n": -${d(17)}}`, false],
    ] as const
  ) assertEquals(accepts(integer, text), ok, text);
  for (
    const [text, ok] of [
      [`{"n": 1.${d(16)}}`, true],
      [`{"n": 1.${d(17)}}`, false],
      [`{"n": 1e${d(16)}}`, true],
      [`{"n": 1e-${d(17)}}`, false],
      [`{"n": ${d(16)}.${d(15)}}`, true],
    ] as const
  ) assertEquals(accepts(ANY_OBJECT, text), ok, text);
});

Deno.test("schemas are bounded in enum values and text, as OpenAI bounds them", () => {
  const values = Array.from({ length: 1001 }, (_, i) => `v${i}`);
  assertThrows(
    () => compileJsonSchema({ type: "object", properties: { a: { enum: values } } }),
    JsonSchemaError,
    "more than 1000 enum/const values",
  );
  const long = { type: "object", properties: { a: { enum: ["x".repeat(15_001)] } } };
  assertThrows(() => compileJsonSchema(long), JsonSchemaError, "exceed 15000 characters");
  // The same bounds hold for a schema that arrives over the wire (a stage decodes it).
  const wire = encodeJsonConstraint({
    schema: {
      kind: "object",
      props: [{ name: "a", required: true, schema: { kind: "enum", values } }],
    },
    vocabulary: "v3-0000000000000000",
  });
  assertThrows(() => decodeJsonConstraint(wire), JsonConstraintError, "more than 1000");
});

Deno.test("mask cache keys stay small whatever the schema (a digest and node ids)", async () => {
  const tok = await loadTokenizer("vocab/ggml-vocab-llama-spm.gguf");
  const values = Array.from({ length: 1000 }, (_, i) => `value-num-${i}`);
  const schema = compileJsonSchema({
    type: "object",
    properties: { pick: { type: "array", items: { enum: values } } },
    required: ["pick"],
  });
  const c = new JsonConstraint(jsonConstraintFor(tok, schema));
  for (const id of tok.encode('{"pick": ["value-num', { addBos: false })) {
    c.mask();
    c.accept(id);
  }
  c.mask();
  const keys = [...c.vocabulary.masks.keys()];
  const longest = Math.max(...keys.map((k) => k.length));
  // Before, every key held the schema's JSON and the literal's candidate texts (16 kB here).
  assert(longest < 2000, `a mask key is ${longest} characters`);
  // A second constraint on the same schema finds the first one's masks.
  const size = c.vocabulary.masks.size;
  const d = new JsonConstraint(jsonConstraintFor(tok, structuredClone(schema)));
  d.mask();
  assertEquals(c.vocabulary.masks.size, size);
});

Deno.test("the sampler refuses a constraint whose vocabulary is not loaded", () => {
  assertThrows(
    () => new Sampler({ json: { schema: ANY_OBJECT, vocabulary: "v3-0000000000000000" } }),
    SamplerParamError,
    "no tokenizer in this process",
  );
});

Deno.test("the constraint survives serialisation and skips the prompt by count (replay)", async () => {
  const tok = await loadTokenizer("vocab/ggml-vocab-llama-spm.gguf");
  const prompt = tok.encode("Hello {{{", { addBos: true });
  const out = tok.encode('{"a"', { addBos: false });
  const spec = JSON.parse(JSON.stringify(jsonConstraintFor(tok, ANY_OBJECT, prompt.length)));
  // A new tail replays prompt + output in one frame before its first pick.
  const s = new Sampler({ temperature: 0, json: spec });
  s.accept([...prompt, ...out]);
  const logits = new Float32Array(tok.vocabSize);
  logits[tok.tokenId("}")!] = 10; // the model wants "}", which cannot follow a key
  const id = s.pick(logits);
  assert(id !== tok.tokenId("}"));
  const next = new TextDecoder().decode(tok.tokenPiece(id, false));
  assert(/^[\s:]/.test(next), JSON.stringify(next));
});

Deno.test("stories260K under json_object: every output is a valid object or a valid prefix", async () => {
  // A model trained on stories writes prose inside strings and rarely closes an object: the
  // outputs cut by max_tokens must still be prefixes of an object, never free text.
  const m = await loadLocalModel(`${SHARED}/models/stories260K.gguf`);
  try {
    for (let seed = 1; seed <= 5; seed++) {
      const r = await generateLocal(m, "Once upon a time", 64, {
        temperature: 1,
        seed,
        json: jsonConstraintFor(m.tokenizer, ANY_OBJECT),
      });
      if (r.finishReason === "stop") JSON.parse(r.text);
      else assert(run(ANY_OBJECT, r.text) !== null, r.text);
      assert(r.text.trimStart().startsWith("{"), r.text);
    }
  } finally {
    m.close();
  }
});

Deno.test("json_object: 50 sampled generations (temperature 1, 50 seeds) all parse, or say length", async () => {
  const m = await loadLocalModel(`${FIXTURES}/models/tiny-f32.gguf`);
  try {
    let complete = 0;
    for (let seed = 1; seed <= 50; seed++) {
      const r = await generateLocal(m, "Hello", 200, {
        temperature: 1,
        topK: 0,
        topP: 1,
        minP: 0,
        seed,
        json: jsonConstraintFor(m.tokenizer, ANY_OBJECT),
      });
      if (r.finishReason === "length") {
        // Cut by max_tokens: still a prefix of a valid object.
        assert(run(ANY_OBJECT, r.text) !== null, r.text);
        continue;
      }
      complete++;
      // Ended by the constraint: the value is complete and an end token closed it.
      assert(m.tokenizer.isEog(r.tokens.at(-1)!));
      const v = JSON.parse(r.text);
      assert(typeof v === "object" && v !== null && !Array.isArray(v), r.text);
    }
    // A random-weight model closes most objects within 200 tokens (33 of 50 when measured).
    assert(complete >= 20, `only ${complete} of 50 completed`);
  } finally {
    m.close();
  }
});

Deno.test("json_schema: a fixture model fills a schema's properties, every output valid", async () => {
  const m = await loadLocalModel(`${FIXTURES}/models/tiny-f32.gguf`);
  const schema = compileJsonSchema({
    type: "object",
    properties: {
      name: { enum: ["Tom", "Lily"] },
      age: { type: "integer" },
      happy: { type: "boolean" },
      pet: { enum: ["cat", "dog"] },
      // Optional: left out, or a string (long: a random model rarely picks the closing quote).
      note: { type: "string" },
    },
    required: ["name", "age", "happy", "pet"],
    additionalProperties: false,
  });
  try {
    let complete = 0;
    for (let seed = 1; seed <= 20; seed++) {
      const r = await generateLocal(m, "Hello", 200, {
        temperature: 1,
        topK: 0,
        topP: 1,
        minP: 0,
        seed,
        json: jsonConstraintFor(m.tokenizer, schema),
      });
      if (r.finishReason === "length") {
        assert(run(schema, r.text) !== null, r.text);
        continue;
      }
      complete++;
      const v = JSON.parse(r.text);
      assertEquals(Object.keys(v).slice(0, 4), ["name", "age", "happy", "pet"]);
      assert(["Tom", "Lily"].includes(v.name));
      assertEquals([Number.isInteger(v.age), typeof v.happy], [true, "boolean"]);
      if ("note" in v) assertEquals(typeof v.note, "string");
      assert(["cat", "dog"].includes(v.pet));
    }
    // Seeded on the reference backend, so the count is fixed: 6 of 20 when measured.
    assert(complete >= 5, `only ${complete} of 20 completed`);
  } finally {
    m.close();
  }
});

Deno.test("constraint settings round-trip as text; hostile text is refused, never run", async () => {
  const tok = await loadTokenizer("vocab/ggml-vocab-gpt-2.gguf");
  const schema = compileJsonSchema({
    type: "object",
    properties: {
      a: { type: ["string", "null"] },
      b: { type: "array", items: { enum: [1, "x"] } },
    },
    required: ["a"],
  });
  const spec = jsonConstraintFor(tok, schema, 7);
  assertEquals(decodeJsonConstraint(encodeJsonConstraint(spec)), spec);
  const deep = (n: number): unknown =>
    n === 0 ? { kind: "any" } : { kind: "array", items: deep(n - 1) };
  for (
    const bad of [
      "not json",
      "[]",
      JSON.stringify({ ...spec, vocabulary: 3 }),
      JSON.stringify({ ...spec, promptTokens: -1 }),
      JSON.stringify({ ...spec, schema: { kind: "regex" } }),
      JSON.stringify({ ...spec, schema: { kind: "enum", values: [{}] } }),
      JSON.stringify({ ...spec, schema: deep(40) }),
    ]
  ) assertThrows(() => decodeJsonConstraint(bad), JsonConstraintError);
});
