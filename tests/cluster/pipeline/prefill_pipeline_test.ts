/**
 * A long prompt goes down a chain in chunks (cluster/pipeline/chain_session.ts): each stage
 * forwards a chunk as soon as it has run it and runs the next while the chunk is further down.
 * The generation must be exactly the one of a single stage — ids and log-probabilities — in
 * process and over the wire, the tail must take the chunks as partial frames (no token for
 * them), and a stage must start a chunk before the previous one came back from the tail.
 */
import {
  type ChainHop,
  Head,
  type HeadResult,
  LocalStageLink,
  type StageFrame,
  StageHost,
  type StageLink,
  StageSessionError,
} from "../../../cluster/pipeline/mod.ts";
import { generateOver, serveChain, stageHosts, summary } from "../../support/chain.ts";
import { assert, assertEquals } from "../../support/assert.ts";

/** 150 prompt tokens (ids of stories260K's 512), chunked by 16 rows: 10 chunks. */
const PROMPT = Array.from({ length: 150 }, (_, i) => 1 + ((i * 37 + 11) % 500));
const CHUNK = 16;

const hosts = (ranges: [number, number][]) => stageHosts(ranges);

/** Every frame a host took: its rows, whether partial, and when it started and ended. */
function record(
  host: StageHost,
  name: string,
  log: string[],
  tailDelayMs = 0,
  until?: () => boolean,
) {
  const frames: { rows: number; partial: boolean }[] = [];
  const step = host.step.bind(host);
  host.step = async (id: string, frame: StageFrame) => {
    const n = frames.push({ rows: frame.tokens.length, partial: !!frame.partial });
    log.push(`${name} start ${n}`);
    try {
      const r = await step(id, frame);
      // A slow tail (its answers held back, its steps still taken in order) makes the overlap
      // visible: the stage before it must not wait for it. With `until`, the first answer is
      // held until it holds (within 5 s), so a loaded machine cannot reorder the events.
      if (tailDelayMs && frame.partial) {
        const deadline = Date.now() + (until && n === 1 ? 5000 : tailDelayMs);
        do await new Promise((r) => setTimeout(r, 2)); while (
          Date.now() < deadline && !(until && n === 1 && until())
        );
      }
      return r;
    } finally {
      log.push(`${name} end ${n}`);
    }
  };
  return frames;
}

function generate(links: StageLink[]): Promise<HeadResult> {
  return generateOver(links, {
    promptTokens: PROMPT,
    maxTokens: 8,
    // Settings a float32 holds exactly: the wire carries them as floats.
    sampling: { temperature: 0.75, seed: 7, repeatPenalty: 1.25, topLogprobs: 3 },
    maxContext: 256,
  });
}

/** The reference: one stage holding the whole model. */
async function single(): Promise<HeadResult> {
  const [whole] = await hosts([[0, 5]]);
  return await generate([new LocalStageLink("one", whole)]);
}

Deno.test("a long prompt pipelined through 3 in-process stages: the single stage's tokens", async () => {
  const want = await single();
  const [a, b, c] = await hosts([[0, 2], [2, 4], [4, 5]]);
  const log: string[] = [];
  const tailFrames = record(c, "c", log);
  const byId: Record<string, StageHost> = { b, c };
  const linkTo = (hop: ChainHop): StageLink =>
    new LocalStageLink(hop.nodeId, byId[hop.nodeId], { linkTo, chunkRows: CHUNK });
  const links = [
    new LocalStageLink("a", a, { linkTo, chunkRows: CHUNK }),
    linkTo({ nodeId: "b", from: 2, to: 4 }),
    linkTo({ nodeId: "c", from: 4, to: 5 }),
  ];
  const got = await generate(links);
  assertEquals(summary(got), summary(want));
  // The prompt reached the tail as 10 chunks, all but the last partial; then 7 decode frames.
  const prompt = tailFrames.slice(0, 10);
  assertEquals(prompt.map((f) => f.rows), [16, 16, 16, 16, 16, 16, 16, 16, 16, 6]);
  assertEquals(prompt.map((f) => f.partial), [...Array(9).fill(true), false]);
  assertEquals(tailFrames.slice(10).map((f) => f.rows), Array(7).fill(1));
  for (const h of [a, b, c]) assertEquals(h.openSessions, 0);
});

/** The stages served over `hop`, each cutting prompts into `chunkRows` chunks. */
function serve(stages: StageHost[], hop: "tcp" | "grpc", chunkRows = [CHUNK, CHUNK, CHUNK]) {
  return serveChain(stages, hop, chunkRows);
}

for (const hop of ["tcp", "grpc"] as const) {
  Deno.test(`a long prompt pipelined through 3 stages over ${hop}: same tokens, chunks overlap`, async () => {
    const want = await single();
    const stages = await hosts([[0, 2], [2, 4], [4, 5]]);
    const log: string[] = [];
    const middle = record(stages[1], "b", log);
    // The tail holds its first answer until b has started chunk 2 (or 5 s pass: then b waited).
    record(stages[2], "c", log, 20, () => log.includes("b start 2"));
    const chain = await serve(stages, hop);
    try {
      const got = await generate(chain.links);
      assertEquals(summary(got), summary(want));
      assertEquals(middle.slice(0, 10).map((f) => f.rows), [16, 16, 16, 16, 16, 16, 16, 16, 16, 6]);
      // b started its second chunk before the (slow) tail was done with the first.
      const at = (e: string) => log.indexOf(e);
      assert(at("b start 2") >= 0 && at("b start 2") < at("c end 1"), log.slice(0, 12).join(", "));
      await new Promise((r) => setTimeout(r, 50));
      for (const h of stages) assertEquals(h.openSessions, 0);
    } finally {
      await chain.close();
    }
  });

  Deno.test(`the tail lost in the middle of a pipelined prompt (${hop}): the failure names it`, async () => {
    const stages = await hosts([[0, 2], [2, 4], [4, 5]]);
    const log: string[] = [];
    const tail = record(stages[2], "c", log, 10);
    const chain = await serve(stages, hop);
    try {
      const step = stages[2].step.bind(stages[2]);
      stages[2].step = (id, frame) => {
        if (tail.length === 3) chain.kill(2);
        return step(id, frame);
      };
      const e = await new Head({ chain: () => Promise.resolve(chain.links) }, { maxRecoveries: 0 })
        .generate({
          requestId: "cut",
          promptTokens: PROMPT,
          maxTokens: 4,
          sampling: { temperature: 0 },
          isEog: () => false,
          maxContext: 256,
        }).then(() => null, (e) => e);
      assert(e, "the generation should fail without a replacement");
      assert(/last: n2: /.test(e.message), `the failure names n2: ${e.message}`);
      await new Promise((r) => setTimeout(r, 100));
      assertEquals(stages[0].openSessions + stages[1].openSessions, 0, "nothing stays open");
    } finally {
      await chain.close();
    }
  });
}

Deno.test("agents with different --prefill-chunk: chunks reach each stage in order, same tokens", async () => {
  const want = await single();
  const stages = await hosts([[0, 2], [2, 4], [4, 5]]);
  const log: string[] = [];
  const tail = record(stages[2], "c", log);
  // The middle stage would cut 16-row chunks into 4-row ones: it must pass them on as they are.
  const chain = await serve(stages, "tcp", [16, 4, 16]);
  try {
    assertEquals(summary(await generate(chain.links)), summary(want));
    // Only the last chunk (not partial) is cut again: 4 + 2.
    assertEquals(tail.slice(0, 11).map((f) => f.rows), [...Array(9).fill(16), 4, 2]);
    assertEquals(tail.slice(0, 11).map((f) => f.partial), [...Array(10).fill(true), false]);
  } finally {
    await chain.close();
  }
});

Deno.test("a stage that fails on a chunk of its own ends the request at once, nothing stays open", async () => {
  const stages = await hosts([[0, 2], [2, 4], [4, 5]]);
  let calls = 0;
  const step = stages[0].step.bind(stages[0]);
  stages[0].step = (id: string, frame: StageFrame) => {
    if (++calls === 3) {
      return Promise.reject(new StageSessionError("the device was lost", "unavailable"));
    }
    return step(id, frame);
  };
  const chain = await serve(stages, "tcp");
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const run = new Head({ chain: () => Promise.resolve(chain.links) }, { maxRecoveries: 0 })
      .generate({
        requestId: "lost",
        promptTokens: PROMPT,
        maxTokens: 4,
        sampling: { temperature: 0 },
        isEog: () => false,
        maxContext: 256,
      }).then(() => "finished", (e) => `failed: ${e.message}`);
    const hung = new Promise((r) => (timer = setTimeout(() => r("hung"), 10_000)));
    const outcome = await Promise.race([run, hung]);
    assert(String(outcome).startsWith("failed:") && /n0/.test(String(outcome)), String(outcome));
    for (let i = 0; i < 50 && stages.some((h) => h.openSessions > 0); i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assertEquals(stages.map((h) => h.openSessions), [0, 0, 0]);
  } finally {
    clearTimeout(timer);
    await chain.close();
  }
});

for (const hop of ["tcp", "grpc"] as const) {
  Deno.test(`a request cancelled mid-prompt (${hop}): every stage stops and frees its session at once`, async () => {
    const stages = await hosts([[0, 2], [2, 4], [4, 5]]);
    // The first two stages take 200 ms a chunk: the whole prompt would take 10 × 200 ms each.
    const steps: number[] = [0, 0];
    for (const i of [0, 1]) {
      const step = stages[i].step.bind(stages[i]);
      stages[i].step = async (id: string, frame: StageFrame) => {
        steps[i]++;
        await new Promise((r) => setTimeout(r, 200));
        return await step(id, frame);
      };
    }
    // Every stage remote, as when the head agent hosts none of the layers.
    const chain = await serveChain(stages, hop, [CHUNK, CHUNK, CHUNK]);
    try {
      const abort = new AbortController();
      const t0 = performance.now();
      setTimeout(() => abort.abort(new Error("client gone")), 300);
      const r = await generateOver(chain.links, {
        promptTokens: PROMPT,
        maxTokens: 4,
        sampling: { temperature: 0 },
        maxContext: 256,
        signal: abort.signal,
      });
      assertEquals(r.finishReason, "cancelled");
      // Before, each stage ran every chunk it had been sent, and held its KV cache meanwhile
      // (its stream handler read the close only after the answers in flight): seconds.
      let open = stages.map((h) => h.openSessions);
      for (let i = 0; i < 50 && open.some((n) => n > 0); i++) {
        await new Promise((r) => setTimeout(r, 20));
        open = stages.map((h) => h.openSessions);
      }
      assertEquals(open, [0, 0, 0], "sessions freed");
      assert(performance.now() - t0 < 2000, `freed after ${performance.now() - t0} ms`);
      const taken = [...steps];
      await new Promise((r) => setTimeout(r, 500));
      assertEquals(steps, taken, "no chunk runs after the session is closed");
      assert(steps[0] < 10 && steps[1] < 10, `chunks run: ${steps}`);
    } finally {
      await chain.close();
    }
  });
}
