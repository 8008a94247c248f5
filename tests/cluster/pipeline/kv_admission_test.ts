/**
 * A stage admits sessions by their KV bytes, not only by count: beyond its limit a session is
 * refused as busy ("exhausted", the stage-full path heads take), admitted again once others
 * close, and the sessions it admitted produce what they produce on an unbounded stage.
 */
import { createReferenceBackend } from "../../../kernels/reference/mod.ts";
import { openGGUF } from "../../../model/gguf/mod.ts";
import { LlamaStage } from "../../../model/llama.ts";
import {
  Head,
  LocalStageLink,
  StageHost,
  type StageLink,
  StageSessionError,
} from "../../../cluster/pipeline/mod.ts";
import { isStageBusy } from "../../../cluster/pipeline/stage_errors.ts";
import { sessionsThatFit } from "../../../cluster/pipeline/kv_admission.ts";
import { assert, assertEquals, assertThrows } from "../../support/assert.ts";
import { FIXTURES } from "../../support/paths.ts";

/** stories260K's whole model on one stage, its KV caches bounded by `kvLimitBytes` (or not). */
async function wholeModel(kvLimitBytes?: number): Promise<StageHost> {
  const file = await openGGUF(`${FIXTURES}/models/stories260K.gguf`);
  const stage = await LlamaStage.load(file, createReferenceBackend(), { maxBatch: 64 });
  file.close();
  return new StageHost(stage, "stories260K", {
    maxSessions: 64,
    defaultContext: 128,
    kvLimitBytes,
  });
}

Deno.test("sessionsThatFit: whole sessions within the bytes left, never negative", () => {
  assertEquals(sessionsThatFit(6e6, 1e6, 924_160), 5);
  assertEquals(sessionsThatFit(6e6, 0, 6e6), 1);
  assertEquals(sessionsThatFit(6e6, 0, 6e6 + 1), 0);
  assertEquals(sessionsThatFit(6e6, 7e6, 1000), 0);
  assertEquals(sessionsThatFit(Infinity, 1e9, 1000), Infinity);
});

Deno.test("past its KV limit a stage refuses sessions as busy and admits them once others close", async () => {
  const probe = await wholeModel();
  const full = probe.stage.kvBytes(128);
  probe.dispose();
  // Room for 3.5 sessions of 128 positions: the 4th full one is refused, a half one is not.
  const limit = Math.floor(3.5 * full);
  const host = await wholeModel(limit);
  try {
    for (let i = 0; i < 3; i++) host.open(`s${i}`, 128);
    assertEquals(host.freeSlots, 0, "free slots count bytes, not only sessions");
    const err = assertThrows(() => host.open("s3", 128), StageSessionError);
    assertEquals((err as StageSessionError).code, "exhausted");
    assert(isStageBusy(err), "the head's stage-full path takes it");
    assert(err.message.includes("no KV room") && err.message.includes("retry later"), err.message);
    assertEquals(host.openSessions, 3, "the refused session holds nothing");
    // A shorter request takes a smaller cache: it still fits.
    host.open("short", 64);
    assert(host.memoryBytes.kvCache <= limit, `${host.memoryBytes.kvCache} > ${limit}`);
    assertThrows(() => host.open("s3", 64), StageSessionError);
    assertEquals(host.refusals, { sessions: 0, kv_bytes: 2, memory: 0 });
    // Room again once a session ends.
    host.close("s0");
    host.open("s3", 128);
    assert(host.memoryBytes.kvCache <= limit);
    // A session longer than the whole limit can never open here: the message says what to do.
    host.closeAll();
    const never = assertThrows(() => host.open("huge", 512), StageSessionError);
    assertEquals((never as StageSessionError).code, "exhausted");
    assert(never.message.includes("max_tokens"), never.message);
    assert(never.message.includes("--memory-budget"), never.message);
  } finally {
    host.dispose();
  }
});

const prompts = Array.from({ length: 6 }, (_, i) => [1, 300 + i, 400 + (i * 7) % 100, 20 + i]);

/** Greedy completions of `ids` (of `prompts`) through `host`, all at once: tokens, or the error. */
function generate(host: StageHost, ids: number[]): Promise<(number[] | Error)[]> {
  const link: StageLink = new LocalStageLink("n0", host, { linkTo: () => link });
  const head = new Head({ chain: () => Promise.resolve([link]) });
  return Promise.all(ids.map((i) =>
    head.generate({
      requestId: `r${i}`,
      promptTokens: prompts[i],
      maxTokens: 24,
      sampling: { temperature: 0, seed: 1, topK: 0, topP: 1, minP: 0 },
      isEog: () => false,
      maxContext: 128,
    }).then((r) => r.tokens.map((t) => t.id), (e) => e as Error)
  ));
}

Deno.test("the sessions a KV limit admits decode as on an unbounded stage; the others wait for room", async () => {
  const all = prompts.map((_, i) => i);
  const free = await wholeModel();
  const solo = await generate(free, all);
  const full = free.stage.kvBytes(128);
  free.dispose();
  const host = await wholeModel(3 * full);
  let most = 0;
  const watch = setInterval(() => most = Math.max(most, host.memoryBytes.kvCache), 1);
  try {
    // Three fit; the stage refuses the other three as busy, and their head waits for room
    // (before, they failed: a 429 for a request the head had admitted).
    const got = await generate(host, all);
    for (const i of all) assertEquals(got[i], solo[i], `request ${i}: ${got[i]}`);
    assert(host.refusals.kv_bytes > 0, "the limit did refuse sessions");
    assert(most <= 3 * full, `the caches held ${most} bytes, over ${3 * full}`);
    assertEquals(host.openSessions, 0);
  } finally {
    clearInterval(watch);
    host.dispose();
  }
});
