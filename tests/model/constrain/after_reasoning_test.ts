/**
 * A JSON constraint after a thinking model's reasoning (model/constrain/after_reasoning.ts):
 * nothing is masked inside the think block, the value is held from the byte after `</think>`
 * (across token borders), a token that would close the block and go on with more than
 * whitespace is masked, and `<think>` may open the output in one token or several.
 */
import { assert, assertEquals, assertThrows } from "../../support/assert.ts";
import {
  ANY_OBJECT,
  decodeJsonConstraint,
  encodeJsonConstraint,
  JsonConstraint,
  JsonConstraintError,
  jsonConstraintFor,
  ReasoningGate,
} from "../../../model/constrain/mod.ts";
import { Sampler } from "../../../model/sampler.ts";
import { loadTokenizer } from "../tokenizer/helpers.ts";

const tokenizer = () => loadTokenizer("vocab/ggml-vocab-qwen2.gguf");
const allows = (m: Uint8Array, id: number) => (m[id >> 3] & (1 << (id & 7))) !== 0;
const count = (m: Uint8Array) =>
  m.reduce((n, b) => n + [...b.toString(2)].filter((c) => c === "1").length, 0);

Deno.test("ReasoningGate open: every token inside the block, the value from the byte after </think>", async () => {
  const tok = await tokenizer();
  const spec = jsonConstraintFor(tok, ANY_OBJECT);
  const gate = new ReasoningGate(new JsonConstraint(spec), "open");
  const fresh = new JsonConstraint(spec);
  const v = gate.vocabulary;
  const words = tok.encode("Hmm, let me think", { addBos: false });
  assert(words.every((id) => allows(gate.mask(), id)), "text the value would refuse is free");
  assert(count(gate.mask()) > count(fresh.mask()) * 10);
  for (const id of words) gate.accept(id);
  const close = tok.encode("</think>", { addBos: false });
  assert(close.length > 1, `</think> takes ${close.length} token(s) in this vocabulary`);
  for (const id of close) {
    assert(gate.thinking && !gate.complete);
    gate.accept(id);
  }
  assert(!gate.thinking, "the tag, across token borders, closes the block");
  assertEquals(gate.mask(), fresh.mask(), "then exactly the value's tokens");
  for (const id of tok.encode('{"a": 1}', { addBos: false })) gate.accept(id);
  assert(gate.complete);
  assert(v.eog.every((id) => allows(gate.mask(), id)));
  assertThrows(() => gate.accept(tok.encode("x", { addBos: false })[0]), JsonConstraintError);
});

Deno.test("ReasoningGate: a token that would end </think> and go on with more than whitespace is masked", async () => {
  const tok = await tokenizer();
  const gate = new ReasoningGate(new JsonConstraint(jsonConstraintFor(tok, ANY_OBJECT)), "open");
  const v = gate.vocabulary;
  const dec = new TextDecoder();
  const piece = (id: number) => dec.decode(v.pieces[id]);
  const ids = [...Array(v.size).keys()];
  const gt = ids.find((id) => piece(id) === ">")!;
  const gtText = ids.find((id) => /^>[A-Za-z]/.test(piece(id)))!;
  const gtBlank = ids.find((id) => /^>\s+$/.test(piece(id)));
  assert(gt !== undefined && gtText !== undefined, "the vocabulary has both kinds");
  assert(allows(gate.mask(), gtText), "away from a tag, anything goes");
  for (const id of tok.encode("ok </think", { addBos: false })) gate.accept(id);
  const m = gate.mask();
  assert(allows(m, gt) && !allows(m, gtText), `">" closes; "${piece(gtText)}" would go on`);
  if (gtBlank !== undefined) {
    assert(allows(m, gtBlank), "whitespace after the tag is not the value's");
    gate.accept(gtBlank);
    assert(!gate.thinking);
    assertEquals(gate.mask(), new JsonConstraint(gate.spec).mask());
  }
});

Deno.test("ReasoningGate start: <think> may open the output, in one token or several; else the value", async () => {
  const tok = await tokenizer();
  const spec = jsonConstraintFor(tok, ANY_OBJECT);
  const opened = new ReasoningGate(new JsonConstraint(spec), "start");
  const open = tok.encode("<think>", { addBos: false });
  assert(
    allows(opened.mask(), open[0]) && allows(opened.mask(), tok.encode("{", { addBos: false })[0]),
  );
  opened.accept(open[0]);
  if (open.length > 1) {
    // Partway into the tag: only its continuations.
    assert(allows(opened.mask(), open[1]));
    assert(!allows(opened.mask(), tok.encode("{", { addBos: false })[0]));
    assertThrows(() => opened.accept(tok.encode("x", { addBos: false })[0]), JsonConstraintError);
    for (const id of open.slice(1)) opened.accept(id);
  }
  assert(opened.thinking);
  const valueFirst = new ReasoningGate(new JsonConstraint(spec), "start");
  valueFirst.accept(tok.encode("{", { addBos: false })[0]);
  assert(!valueFirst.thinking, "a first token that is no tag begins the value");
  assert(!allows(valueFirst.mask(), open[0]));
});

Deno.test("a sampler whose constraint waits for the reasoning picks freely inside the block", async () => {
  const tok = await tokenizer();
  const spec = { ...jsonConstraintFor(tok, ANY_OBJECT, 1), reasoning: "open" as const };
  assertEquals(decodeJsonConstraint(encodeJsonConstraint(spec)), spec);
  assertThrows(
    () => decodeJsonConstraint(encodeJsonConstraint({ ...spec, reasoning: "x" as "open" })),
    JsonConstraintError,
  );
  const word = tok.encode("Hmm", { addBos: false })[0];
  const logits = new Float32Array(tok.vocabSize);
  logits[word] = 10;
  const s = new Sampler({ temperature: 0, json: spec });
  s.accept([1]); // the prompt
  assertEquals(s.sample(logits), word, "not masked inside the block");
  const plain = new Sampler({ temperature: 0, json: { ...spec, reasoning: undefined } });
  plain.accept([1]);
  assert(plain.sample(logits) !== word, "held to the value without the gate");
});
