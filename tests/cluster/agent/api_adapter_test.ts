/** The agent as the OpenAI API sees it: token texts and bytes for logprobs. */
import { textGenerator } from "../../../cluster/agent/api_adapter.ts";
import type { AgentState } from "../../../cluster/agent/state.ts";
import type { HeadService } from "../../../cluster/agent/head_service.ts";
import type { TokenEvent } from "../../../cluster/api/mod.ts";
import { ModelId } from "../../../cluster/model_id.ts";
import { assertEquals } from "../../support/assert.ts";

/** A model whose every token is `piece`. */
const modelOf = (piece: Uint8Array) => ({ tokenizer: { tokenPiece: () => piece } });

Deno.test("logprob tokens carry their raw bytes, read with the vocabulary of the model each request was admitted on", async () => {
  // One of the four bytes of 🦙 (a byte-fallback or byte-level BPE piece): its text is U+FFFD.
  let admitted: unknown = modelOf(Uint8Array.of(0xf0));
  // The model served now is not the one the request runs on (models deploy replaced it, or
  // undeploy left none): its vocabulary must not read the request's tokens.
  const state = { model: undefined } as unknown as AgentState;
  const head = {
    async *generate() {
      yield {
        kind: "token",
        model: admitted,
        text: "",
        token: { id: 7, logprob: -1, top: [{ id: 7, logprob: -1 }] },
      };
    },
  } as unknown as HeadService;
  const gen = textGenerator(state, head, () => ({}));
  const first = async () => {
    for await (const e of gen.generate({} as never, new AbortController().signal)) {
      return e as TokenEvent;
    }
    throw new Error("no event");
  };
  const e = await first();
  assertEquals(e.token.text, "\ufffd");
  assertEquals([...e.token.bytes!], [0xf0], "the piece's own byte, not U+FFFD's three");
  assertEquals([...e.top[0].bytes!], [0xf0]);
  // A whole character needs no bytes of its own: its text's UTF-8 is them.
  admitted = modelOf(new TextEncoder().encode("é"));
  const after = await first();
  assertEquals(after.token.text, "é", "the next model's piece, not the cached one");
  assertEquals(after.token.bytes, undefined);
});

Deno.test("the API lists the model under the names the head takes (ModelId.matches)", () => {
  const state = {
    model: {
      id: ModelId.of("/models/stories260K.gguf", 1000, "abc"),
      contextLength: 512,
      chat: { toolFormat: "llama3" },
    },
    config: { contextSize: 256 },
    startedAt: 1,
  } as unknown as AgentState;
  const [m] = textGenerator(state, {} as HeadService, () => ({})).models();
  assertEquals([m.id, m.contextLength], ["stories260K.gguf", 256]);
  // Its template's tool format: the API plans a request's tools by it.
  assertEquals(m.toolFormat, "llama3");
  for (const name of ["stories260K", "stories260K.gguf", "stories260K.gguf@1000#abc"]) {
    assertEquals(m.matches?.(name), true, name);
  }
  assertEquals(m.matches?.("stories"), false);
});

Deno.test("the head tells the API when it took a request (a stream's status line goes then)", async () => {
  let seen: (() => void) | undefined;
  const head = {
    // deno-lint-ignore require-yield
    async *generate(p: { onAccepted?: () => void }) {
      seen = p.onAccepted;
    },
  } as unknown as HeadService;
  const gen = textGenerator({} as AgentState, head, () => ({}));
  const onAccepted = () => {};
  for await (const _ of gen.generate({} as never, new AbortController().signal, onAccepted));
  assertEquals(seen, onAccepted);
});
