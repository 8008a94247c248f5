/** HeadService.linkTo: how a stage reaches the next one named by a chain. */
import { testHead } from "./head_fixture.ts";
import { StaleEpochError } from "../../../cluster/pipeline/mod.ts";
import { Admission, toApiError } from "../../../cluster/api/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";
import { MAX_REQUEST_ID_CHARS } from "../../../cluster/agent/head_service.ts";

Deno.test("a hop to a node this agent's gossip has not met yet is a stale view, not a failed stage", async () => {
  // Agent b, whose gossip knows nobody else yet (the head saw c join first).
  const { service, peers } = testHead({
    nodeId: "b",
    stage: undefined,
    gossip: { member: () => undefined },
  });
  const e = await service.linkTo({ nodeId: "c", from: 3, to: 5 }).openSession({
    sessionId: "s",
    maxContext: 16,
    model: "m",
    epoch: 1n,
    downstream: [],
  }).then(() => null, (e) => e);
  // Blaming c would exclude a healthy node for the rest of the request.
  assert(e instanceof StaleEpochError, `expected StaleEpochError, got ${e}`);
  assertEquals(e.nodeId, "b");
  assert(e.message.includes("b does not know c yet"), e.message);
  peers.closeAll();
});

/** A head of model "m@1" (100 tokens, 64 positions), taking requests through `admission`. */
function servingHead(admission = new Admission(1, 4)) {
  return testHead({
    nodeId: "h",
    admission,
    requests: new Map<string, AbortController>(),
    draining: false,
    model: {
      id: { matches: () => true, toString: () => "m@1" },
      tokenizer: { vocabSize: 100 },
      contextLength: 64,
    },
  });
}

Deno.test("a request waiting for a slot holds its id (a second is refused, Cancel reaches it); one granted during shutdown is refused", async () => {
  const admission = new Admission(1, 4);
  const busy = await admission.acquire(); // the one slot, held by a running generation
  const { service, state } = servingHead(admission);
  const start = (id: string) => {
    const it = service.generate(
      { requestId: id, promptTokens: [1, 2, 3], maxTokens: 4, sampling: {} },
      new AbortController().signal,
    )[Symbol.asyncIterator]();
    return it.next().then(() => null, (e) => e);
  };
  const queued = start("dup");
  await new Promise((r) => setTimeout(r, 20));
  assertEquals(admission.stats.queued, 1);
  assert(state.requests.has("dup"), "the id is taken while it waits");
  const second = await start("dup");
  assertEquals((second as { rpcCode?: string }).rpcCode, "already_exists", `${second}`);
  assert(service.cancel("dup"), "Cancel finds the waiting request");
  const cancelled = await queued;
  assertEquals((cancelled as { rpcCode?: string }).rpcCode, "canceled", `${cancelled}`);
  assertEquals(state.requests.size, 0);
  assertEquals(admission.stats.queued, 0);
  // Shutdown begins while a request waits: when the slot frees it is refused, not started.
  const waiting = start("late");
  await new Promise((r) => setTimeout(r, 20));
  (state as { draining: boolean }).draining = true;
  busy();
  const late = await waiting;
  assertEquals((late as { rpcCode?: string }).rpcCode, "unavailable", `${late}`);
  assert(/shutting down/.test((late as Error).message), (late as Error).message);
  assertEquals(admission.stats.active, 0, "its slot went back");
  assertEquals(state.requests.size, 0);
  (state as { draining: boolean }).draining = false;
  // A client gone before its request reached admission: refused, nothing left behind.
  const gone = new AbortController();
  gone.abort(new Error("the client went away"));
  const early = await service.generate(
    { requestId: "early", promptTokens: [1], maxTokens: 1, sampling: {} },
    gone.signal,
  )[Symbol.asyncIterator]().next().then(() => null, (e) => e);
  assert(/went away/.test(String(early)), `${early}`);
  assertEquals(state.requests.size, 0);
  assertEquals(admission.stats.active, 0);
  // Stop strings are bounded over RPC as over HTTP (matching costs L² per token).
  const long = await service.generate(
    { promptTokens: [1], maxTokens: 1, sampling: {}, stop: ["z".repeat(513)] },
    new AbortController().signal,
  )[Symbol.asyncIterator]().next().then(() => null, (e) => e);
  assertEquals((long as { rpcCode?: string }).rpcCode, "invalid_argument", `${long}`);
  // And in number: 30 000 of them slowed every request of the head 5× (hunt 3, F3).
  const many = await service.generate(
    { promptTokens: [1], maxTokens: 1, sampling: {}, stop: Array(5).fill("z") },
    new AbortController().signal,
  )[Symbol.asyncIterator]().next().then(() => null, (e) => e);
  assertEquals((many as { rpcCode?: string }).rpcCode, "invalid_argument", `${many}`);
  assert(/at most 4 stop strings/.test(String(many)), `${many}`);
});

Deno.test("an agent started with --no-model answers a request with the agents that serve the cluster's model", async () => {
  const member = (id: string, hosted: boolean) => ({
    id,
    status: "alive",
    meta: {
      addresses: ["10.0.0.9"],
      httpPort: 8080,
      hosted: hosted ? { model: "stories260K.gguf@1185376#abc", from: 0, to: 5 } : null,
    },
  });
  const { service, peers } = testHead({
    nodeId: "n",
    model: undefined,
    gossip: { members: () => [member("n", false), member("a", true), member("b", false)] },
  });
  const e = await service.generate(
    { prompt: "hi", sampling: {} },
    new AbortController().signal,
  )[Symbol.asyncIterator]().next().then(() => null, (e) => e);
  // Before: a 400 "this agent serves no model (start it with --model)".
  assertEquals((e as { rpcCode?: string }).rpcCode, "unavailable", `${e}`);
  const msg = (e as Error).message;
  assert(msg.includes("the cluster serves stories260K.gguf on a (HTTP 10.0.0.9:8080)"), msg);
  assert(msg.includes("send requests to one of them"), msg);
  peers.closeAll();
});

Deno.test("a client's request_id is at most MAX_REQUEST_ID_CHARS: it comes back in every streamed message", async () => {
  // Before, a 1 MB id made a 50-token answer 51 MB (found by an independent tester).
  const { service, state } = servingHead();
  const e = await service.generate(
    {
      requestId: "r".repeat(MAX_REQUEST_ID_CHARS + 1),
      promptTokens: [1],
      maxTokens: 1,
      sampling: {},
    },
    new AbortController().signal,
  )[Symbol.asyncIterator]().next().then(() => null, (e) => e);
  assertEquals((e as { rpcCode?: string }).rpcCode, "invalid_argument", `${e}`);
  assert(String(e).includes(`at most ${MAX_REQUEST_ID_CHARS}`), `${e}`);
  assertEquals(state.requests.size, 0);
});

Deno.test("token ids past the vocabulary (prompt, logit_bias) are 400s naming the field", async () => {
  // Before, both came back with param and code null, unlike every other logit_bias error
  // (found by an independent tester); logit_bias's was the tail's, found only at the stage.
  const { service } = servingHead();
  const refusal = (req: Parameters<typeof service.generate>[0]) =>
    service.generate(req, new AbortController().signal)[Symbol.asyncIterator]().next()
      .then(() => null, (e) => toApiError(e));
  const prompt = await refusal({ promptTokens: [1, 100], maxTokens: 1, sampling: {} });
  assertEquals([prompt?.status, prompt?.param, prompt?.code], [400, "prompt", "invalid_value"]);
  assert(
    prompt!.message.includes("token id 100 is not in the vocabulary (0..99)"),
    prompt!.message,
  );
  const bias = await refusal({
    promptTokens: [1],
    maxTokens: 1,
    sampling: { logitBias: { 7: 1, 100: -5 } },
  });
  assertEquals([bias?.status, bias?.param, bias?.code], [400, "logit_bias", "invalid_value"]);
  assert(bias!.message.includes("names token 100"), bias!.message);
});

Deno.test("a request that waited for a slot while the placement was lost is refused at once, as a new one is", async () => {
  // Each queued request waited 10 s for a plan in turn, a slot's worth at a time, while /health
  // already said no placement (the last of a full queue some 20 minutes).
  const admission = new Admission(1, 4);
  const busy = await admission.acquire();
  const { service, state, loop } = servingHead(admission);
  const waiting = service.generate(
    { requestId: "q", promptTokens: [1, 2, 3], maxTokens: 4, sampling: {} },
    new AbortController().signal,
  )[Symbol.asyncIterator]().next().then(() => null, (e) => e);
  await new Promise((r) => setTimeout(r, 20));
  assertEquals(admission.stats.queued, 1);
  loop.error = "layer 4 has no live agent";
  const t0 = performance.now();
  busy();
  const e = await waiting;
  assertEquals((e as { rpcCode?: string }).rpcCode, "unavailable", `${e}`);
  assert(/no placement: layer 4 has no live agent/.test(String(e)), `${e}`);
  assert(performance.now() - t0 < 1000, "it waited for a plan");
  assertEquals(admission.stats.active, 0, "its slot went back");
  assertEquals(state.requests.size, 0);
});
