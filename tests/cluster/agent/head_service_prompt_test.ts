/** HeadService.generate before the chain runs: prompts refused by size, when a request is taken. */
import { longestPieceBytes } from "../../../cluster/agent/decoding.ts";
import { testHead } from "./head_fixture.ts";
import { Admission, PromptTooLongError } from "../../../cluster/api/mod.ts";
import { openGGUF } from "../../../model/gguf/mod.ts";
import { tokenizerFromMetadata } from "../../../model/tokenizer/mod.ts";
import { SHARED } from "../../support/paths.ts";
import { assert, assertEquals } from "../../support/assert.ts";

/** A head over `model` whose one slot is held by another generation. */
async function busyHead(model: Record<string, unknown>) {
  const admission = new Admission(1, 4);
  const busy = await admission.acquire();
  const { service, state, peers } = testHead({
    nodeId: "h",
    admission,
    requests: new Map<string, AbortController>(),
    draining: false,
    model: { id: { matches: () => true, toString: () => "m@1" }, contextLength: 64, ...model },
  });
  return { service, state, admission, close: () => (busy(), peers.closeAll()) };
}

Deno.test("a request is taken (onAccepted) once it has a place in line, before its first token", async () => {
  const { service, state, admission, close } = await busyHead({ tokenizer: { vocabSize: 100 } });
  let accepted = 0;
  const first = service.generate(
    { requestId: "r", promptTokens: [1, 2, 3], sampling: {}, onAccepted: () => accepted++ },
    new AbortController().signal,
  )[Symbol.asyncIterator]().next().then(() => null, (e) => e);
  await new Promise((r) => setTimeout(r, 20));
  assertEquals(admission.stats.queued, 1);
  assertEquals(accepted, 1, "told while it waits in line");
  assert(service.cancel("r"));
  await first;
  assertEquals(state.requests.size, 0);
  close();
});

Deno.test("a prompt longer than the context could ever hold is refused before it is tokenized", async () => {
  let encoded = 0;
  const tokenizer = {
    vocabSize: 3,
    addBos: false,
    // " longest12": 10 bytes of text, the most one token covers.
    tokenPiece: (id: number) => new TextEncoder().encode(["a", "bc", " longest12"][id]),
    encode: (text: string) => (encoded++, Array(Math.ceil(text.length / 10)).fill(1)),
  };
  const chat = { render: (m: { content: string }[]) => ({ text: m[0].content, addBos: false }) };
  const { service, close } = await busyHead({ tokenizer, chat });
  const refusal = (p: { prompt?: string; messages?: { role: string; content: string }[] }) =>
    service.generate({ ...p, sampling: {} }, new AbortController().signal)
      [Symbol.asyncIterator]().next().then(() => null, (e) => e);
  // 64 positions of at most 10 bytes: 641 bytes can never fit; tokenizing 4 MB took ~10 s.
  for (
    const p of [{ prompt: "x".repeat(641) }, {
      messages: [{ role: "user", content: "é".repeat(321) }],
    }]
  ) {
    const e = await refusal(p);
    assert(e instanceof PromptTooLongError, `${e}`);
    assertEquals(e.httpStatus, 413);
    assert(e.message.includes("bytes, at least 65 tokens; the context holds 64"), e.message);
  }
  assertEquals(encoded, 0, "refused without tokenizing");
  // One that might fit is tokenized and judged by its tokens.
  const tokens = await refusal({ prompt: "x".repeat(640) });
  assertEquals(encoded, 1);
  assert(
    tokens instanceof PromptTooLongError && tokens.message.startsWith("the prompt has 64 tokens"),
    `${tokens}`,
  );
  close();
});

Deno.test("a vocabulary's longest piece bounds the bytes a token covers (stories260K)", async () => {
  const file = await openGGUF(`${SHARED}/models/stories260K.gguf`);
  const tokenizer = tokenizerFromMetadata(file.metadata);
  file.close();
  const longest = longestPieceBytes(tokenizer);
  const text = "Once upon a time, there was a little girl named Lily. 🦙 ".repeat(20);
  const tokens = tokenizer.encode(text, { addBos: false });
  assert(new TextEncoder().encode(text).length <= tokens.length * longest);
});
