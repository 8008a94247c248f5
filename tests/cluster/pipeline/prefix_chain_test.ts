/**
 * The prefix cache across a chain of stages: each stage keeps its own layers' KV of served
 * prefixes; a session's opening carries the prompt's ids, every stage restores the longest prefix
 * it holds, the chain starts at the least of them, and the head sends only the rest. Output is
 * exactly a single uncached stage's (ids, log-probabilities, alternatives, with penalties that
 * read the whole prompt), in process and over the wire.
 */
import {
  type ChainHop,
  type HeadResult,
  LocalStageLink,
  type StageFrame,
  StageHost,
  type StageLink,
  StaleEpochError,
} from "../../../cluster/pipeline/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";
import { generateOver, serveChain, stageHosts, summary } from "../../support/chain.ts";

/** A shared 100-token "system prompt": three full 32-token blocks, then 4 tokens. */
const SYSTEM = Array.from({ length: 100 }, (_, i) => 1 + ((i * 37 + 11) % 500));
const turn = (k: number) => Array.from({ length: 20 }, (_, i) => 1 + ((i * 13 + 97 * k) % 500));

/** Stages over `ranges`, each with a prefix cache of `budgets[i]` bytes (0: none). */
const hosts = (ranges: [number, number][], budgets: number[]) =>
  stageHosts(ranges, (i) => ({ prefixCacheBytes: budgets[i] }));

/** Bytes of one 32-token block of a stage's layers. */
function blockBytes(host: StageHost): number {
  const s = host.stage;
  return 2 * (s.to - s.from) * 32 * s.config.nKVHeads * s.config.headDim * 4;
}

function generate(links: StageLink[], prompt: number[]): Promise<HeadResult> {
  return generateOver(links, {
    promptTokens: prompt,
    maxTokens: 6,
    // Penalties read the sampler's history, which must hold the whole prompt, cached or not.
    sampling: { temperature: 0.75, seed: 7, repeatPenalty: 1.3, topLogprobs: 3 },
    maxContext: 160,
  });
}

/** Links to stages a, b, c in this process, each opening the next itself. */
function inProcess(stages: StageHost[]): StageLink[] {
  const byId: Record<string, StageHost> = { b: stages[1], c: stages[2] };
  const linkTo = (hop: ChainHop): StageLink =>
    new LocalStageLink(hop.nodeId, byId[hop.nodeId], { linkTo });
  return [
    new LocalStageLink("a", stages[0], { linkTo }),
    linkTo({ nodeId: "b", from: 2, to: 4 }),
    linkTo({ nodeId: "c", from: 4, to: 5 }),
  ];
}

/** Rows of every frame the tail took. */
function tailRows(host: StageHost): number[] {
  const rows: number[] = [];
  const step = host.step.bind(host);
  host.step = (id: string, frame: StageFrame) => {
    rows.push(frame.tokens.length);
    return step(id, frame);
  };
  return rows;
}

/** The same prompts through one uncached stage. */
async function reference(prompts: number[][]): Promise<HeadResult[]> {
  const [whole] = await hosts([[0, 5]], [0]);
  const out = [];
  for (const p of prompts) out.push(await generate([new LocalStageLink("one", whole)], p));
  return out;
}

const PROMPTS = [[...SYSTEM, ...turn(1)], [...SYSTEM, ...turn(2)], [...SYSTEM, ...turn(3)]];

Deno.test("prefix cache over a 3-stage chain in process: the shared prefix is restored on every stage", async () => {
  const want = await reference(PROMPTS);
  const stages = await hosts([[0, 2], [2, 4], [4, 5]], [1 << 20, 1 << 20, 1 << 20]);
  const rows = tailRows(stages[2]);
  const links = inProcess(stages);
  const got = [];
  for (const p of PROMPTS) got.push(await generate(links, p));
  assertEquals(got.map((r) => r.cachedTokens), [0, 96, 96]);
  assertEquals(got.map(summary), want.map(summary));
  // The first prompt reached the tail in two pipelined chunks (64 rows each at most); the later
  // ones as their 24 uncached tokens; each then took 5 decode frames.
  const decode = [1, 1, 1, 1, 1];
  assertEquals(rows, [64, 56, ...decode, 24, ...decode, 24, ...decode]);
  for (const h of stages) {
    assertEquals(h.openSessions, 0);
    const stats = h.stage.prefixCache!.stats();
    assertEquals(stats.hitTokens, 192, "each stage restored 96 positions twice");
  }
});

Deno.test("the chain starts at the least any stage restored: a stage holding one block", async () => {
  const want = await reference(PROMPTS);
  const probe = await hosts([[2, 4]], [0]);
  // The middle stage's budget holds one block: it keeps the prompt's first block only.
  const stages = await hosts([[0, 2], [2, 4], [4, 5]], [
    1 << 20,
    blockBytes(probe[0]),
    1 << 20,
  ]);
  const rows = tailRows(stages[2]);
  const links = inProcess(stages);
  const got = [];
  for (const p of PROMPTS) got.push(await generate(links, p));
  assertEquals(got.map((r) => r.cachedTokens), [0, 32, 32]);
  assertEquals(got.map(summary), want.map(summary));
  const decode = [1, 1, 1, 1, 1];
  assertEquals(rows, [64, 56, ...decode, 64, 24, ...decode, 64, 24, ...decode]);
  assertEquals(stages[1].stage.prefixCache!.stats().bytes, blockBytes(stages[1]));
});

for (const hop of ["tcp", "grpc"] as const) {
  Deno.test(`prefix cache over a 3-stage chain over ${hop}: same tokens, the suffix alone runs`, async () => {
    const want = await reference(PROMPTS);
    const stages = await hosts([[0, 2], [2, 4], [4, 5]], [1 << 20, 1 << 20, 1 << 20]);
    const rows = tailRows(stages[2]);
    const chain = await serveChain(stages, hop);
    try {
      const got = [];
      for (const p of PROMPTS) got.push(await generate(chain.links, p));
      assertEquals(got.map((r) => r.cachedTokens), [0, 96, 96]);
      assertEquals(got.map(summary), want.map(summary));
      const decode = [1, 1, 1, 1, 1];
      assertEquals(rows, [64, 56, ...decode, 24, ...decode, 24, ...decode]);
      await new Promise((r) => setTimeout(r, 50));
      for (const h of stages) assertEquals(h.openSessions, 0);
    } finally {
      await chain.close();
    }
  });
}

Deno.test("a stage without a prefix cache in the chain: nothing is restored, same tokens", async () => {
  const want = await reference(PROMPTS.slice(0, 2));
  const stages = await hosts([[0, 2], [2, 4], [4, 5]], [1 << 20, 1 << 20, 0]);
  const chain = await serveChain(stages, "tcp");
  try {
    const got = [];
    for (const p of PROMPTS.slice(0, 2)) got.push(await generate(chain.links, p));
    assertEquals(got.map((r) => r.cachedTokens), [0, 0]);
    assertEquals(got.map(summary), want.map(summary));
  } finally {
    await chain.close();
  }
});

Deno.test("a stage whose restore fails closes the session it opened", async () => {
  const stages = await hosts([[0, 2], [2, 4], [4, 5]], [1 << 20, 1 << 20, 1 << 20]);
  stages[1].restorePrefix = () => {
    throw new Error("the device is gone");
  };
  const e = await generate(inProcess(stages), PROMPTS[0]).then(() => null, (e) => e);
  assert(e instanceof Error && /the device is gone/.test(e.message), String(e));
  for (const h of stages) assertEquals(h.openSessions, 0);
});

Deno.test("a replay's cached tokens count prompt tokens only, never the generated ones", async () => {
  // A 40-token prompt, then 35 tokens before the stage asks for a re-read of the placement: the
  // replay sends 75 ids, of which the stage cached 64 (its blocks hold generated tokens too).
  const [host] = await hosts([[0, 5]], [1 << 20]);
  const inner = new LocalStageLink("a", host);
  let opened = 0;
  const flaky: StageLink = {
    nodeId: "a",
    from: 0,
    to: 5,
    local: true,
    async openSession(open) {
      const s = await inner.openSession(open);
      if (opened++ > 0) return s;
      let steps = 0;
      return {
        cachedTokens: s.cachedTokens,
        close: (reason) => s.close(reason),
        step: (frame) =>
          ++steps > 35
            ? Promise.reject(new StaleEpochError("re-read the placement", "a"))
            : s.step(frame),
      };
    },
  };
  const prompt = SYSTEM.slice(0, 40);
  const req = {
    promptTokens: prompt,
    maxTokens: 40,
    sampling: { temperature: 0 },
    maxContext: 160,
  };
  const got = await generateOver([flaky], req);
  assertEquals(opened, 2, "replayed once");
  assertEquals(got.cachedTokens, 40, "the whole prompt came from the cache, and no more");
  const [plain] = await hosts([[0, 5]], [0]);
  const want = await generateOver([new LocalStageLink("one", plain)], req);
  assertEquals(summary(got), summary(want));
});
