/**
 * Chunked prefill in a StageHost: while other sessions are open, a long prompt runs a slice per
 * pass and waits at the front of the queue for the next, so the others' decode frames keep
 * joining passes instead of waiting for the whole prompt. Every request's tokens stay exactly
 * what it produces alone.
 */
import { createReferenceBackend } from "../../../kernels/reference/mod.ts";
import { openGGUF } from "../../../model/gguf/mod.ts";
import { LlamaStage, type Session } from "../../../model/llama.ts";
import {
  type HostedSession,
  type PendingStep,
  SliceClock,
  takeBatch,
} from "../../../cluster/pipeline/prefill_slices.ts";
import {
  Head,
  type HeadRequest,
  LocalStageLink,
  StageHost,
} from "../../../cluster/pipeline/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";
import { FIXTURES } from "../../support/paths.ts";

async function host(sliceRows?: number, onStep?: (rows: number) => void) {
  const file = await openGGUF(`${FIXTURES}/models/stories260K.gguf`);
  try {
    return new StageHost(
      await LlamaStage.load(file, createReferenceBackend(), { maxBatch: 64 }),
      "s",
      { defaultContext: 256, sliceRows, onStep: (s) => onStep?.(s.rows) },
    );
  } finally {
    file.close();
  }
}

const LONG = Array.from({ length: 200 }, (_, i) => 1 + ((i * 53 + 7) % 500));
const SHORT = [1, 300, 420, 22];

function request(
  id: string,
  prompt: number[],
  maxTokens: number,
  extra: Partial<HeadRequest> = {},
) {
  return {
    requestId: id,
    promptTokens: prompt,
    maxTokens,
    sampling: { temperature: 0.75, seed: 11, repeatPenalty: 1.25 },
    isEog: () => false,
    maxContext: 256,
    ...extra,
  };
}

Deno.test("a long prompt runs in slices while another session decodes; tokens as alone", async () => {
  const ids = (r: { tokens: { id: number }[] }) => r.tokens.map((t) => t.id);
  const solo = new Head({ chain: async () => [new LocalStageLink("n0", await host(16))] });
  const aloneA = ids(await solo.generate(request("a", SHORT, 150)));
  const aloneB = ids(await solo.generate(request("b", LONG, 4)));

  const passes: number[] = [];
  const h = await host(16, (rows) => passes.push(rows));
  const head = new Head({ chain: () => Promise.resolve([new LocalStageLink("n0", h)]) });
  /** A's tokens, and how many of them came while B's prompt ran. */
  let aTokens = 0;
  let duringPrompt = 0;
  let bStarted = false;
  let bFirst = false;
  let b: Promise<{ tokens: { id: number }[] }> | undefined;
  const a = head.generate(request("a", SHORT, 150, {
    onToken: () => {
      aTokens++;
      if (bStarted && !bFirst) duringPrompt++;
      if (aTokens === 5) {
        bStarted = true;
        b = head.generate(request("b", LONG, 4, { onToken: () => void (bFirst = true) }));
      }
    },
  }));
  const togetherA = ids(await a);
  const togetherB = ids(await b!);
  assertEquals(togetherA, aloneA);
  assertEquals(togetherB, aloneB);
  // While A was open, B's 200 rows went in slices of at most 16 rows (+ A's decode row).
  const big = passes.filter((r) => r > 2);
  assert(big.length >= 200 / 16, `B's prompt ran in ${big.length} passes: ${passes.join(",")}`);
  assert(Math.max(...passes) <= 17, `a pass ran ${Math.max(...passes)} rows: ${passes.join(",")}`);
  assert(duringPrompt >= 5, `A got ${duringPrompt} tokens while B's prompt ran`);
  assertEquals(h.openSessions, 0);
});

Deno.test("alone, or with slicing off, a long prompt runs whole in one step", async () => {
  for (const sliceRows of [16, 0]) {
    const passes: number[] = [];
    const h = await host(sliceRows, (rows) => passes.push(rows));
    const head = new Head({ chain: () => Promise.resolve([new LocalStageLink("n0", h)]) });
    await head.generate(request("b", LONG, 2));
    assertEquals(passes[0], 200, `sliceRows ${sliceRows}: ${passes.join(",")}`);
  }
});

Deno.test("a prompt that cannot fit the context fails alone, before any slice runs", async () => {
  const h = await host(16);
  h.open("a", 64);
  h.open("b", 64);
  const [bad, good] = await Promise.allSettled([
    h.step("a", { tokens: Int32Array.from(LONG.slice(0, 100)) }),
    h.step("b", { tokens: Int32Array.from(SHORT) }),
  ]);
  assertEquals(bad.status, "rejected");
  assert(/context is full: 0 \+ 100/.test(String((bad as PromiseRejectedResult).reason)));
  assertEquals(good.status, "fulfilled");
  h.closeAll();
});

const session = (id: string) => ({ session: { id } as unknown as Session, topLogprobs: 0 });
const frame = (hosted: HostedSession, rows: number): PendingStep => ({
  sessionId: "x",
  hosted,
  frame: { tokens: new Int32Array(rows) },
  rows,
  done: 0,
  take: 0,
  ms: 0,
  resolve: () => {},
  reject: () => {},
});

Deno.test("takeBatch: a session's later frame never overtakes one that waits", () => {
  const a = session("a");
  const b = session("b");
  // 7 of 8 rows taken by b: a's 64-row chunk cannot start (a 1-row slice is below the minimum),
  // so a's next frame must wait behind it although it would fit.
  const waiting = [frame(b, 7), frame(a, 64), frame(a, 1)];
  const { batch, rest } = takeBatch(waiting, 8, 16);
  assertEquals(batch.map((p) => [p.hosted === b ? "b" : "a", p.take]), [["b", 7]]);
  assertEquals(rest.map((p) => p.rows), [64, 1]);
});

Deno.test("a session closed while a pass runs on it keeps its cache until the pass ends", async () => {
  const h = await host(16);
  const freedAt: number[] = [];
  const end = h.stage.endSession.bind(h.stage);
  h.stage.endSession = (s: Session) => {
    freedAt.push(h.pending); // frames waiting or in the running pass
    end(s);
  };
  h.open("a", 256);
  // Closed from inside the pass (as a stream that ends while its frame runs).
  let freedDuring: number | undefined;
  const forward = h.stage.forward.bind(h.stage);
  h.stage.forward = (...args: Parameters<typeof forward>) => {
    const running = forward(...args);
    h.close("a");
    freedDuring = freedAt.length;
    return running;
  };
  const step = h.step("a", { tokens: Int32Array.from(LONG) });
  await step.catch(() => {});
  assertEquals(freedDuring, 0, "not freed while the pass reads it");
  assertEquals(freedAt, [0], "freed once the pass ended");
});

Deno.test("takeBatch: prompts share one slice per pass, and a decode row always gets in", () => {
  const [a, b, c, d] = ["a", "b", "c", "d"].map(session);
  const name = (p: PendingStep) => [a, b, c, d].indexOf(p.hosted);
  // Two prompts in slices at the front of the queue (as sliced frames go back), decode rows of
  // c and d behind them. Before, each prompt took a 16-row slice, the pass of 32 was full, and
  // the decode rows waited until both prompts had run.
  const waiting = [frame(b, 160), frame(c, 1), frame(a, 160), frame(d, 1)];
  const { batch, rest } = takeBatch(waiting, 32, 16);
  assertEquals(batch.map((p) => [name(p), p.take]), [[1, 16], [2, 1], [3, 1]]);
  assertEquals(rest.map(name), [0]);
  // A full pass still leaves the decode rows their room.
  const many = [frame(b, 160), frame(a, 160), frame(c, 1), frame(d, 1)];
  const full = takeBatch(many, 8, 16);
  assertEquals(full.batch.map((p) => [name(p), p.take]), [[1, 6], [2, 1], [3, 1]]);
});

Deno.test("takeBatch: as many decoding streams as a pass holds cannot keep a prompt out", () => {
  const decoders = Array.from({ length: 8 }, (_, i) => session(`d${i}`));
  const prompt = session("p");
  const waiting = [frame(prompt, 100), ...decoders.map((d) => frame(d, 1))];
  const { batch } = takeBatch(waiting, 8, 16);
  // The prompt gets the minimum slice, and the decode rows the rest of the pass.
  assertEquals(batch[0].hosted, prompt);
  assertEquals(batch[0].take, 2);
  assertEquals(batch.slice(1).map((p) => p.take), [1, 1, 1, 1, 1, 1]);
});

Deno.test("takeBatch: with no decode row waiting, each prompt takes its own slice", () => {
  // Sharing one slice between prompts that hold nobody back only made them take more passes
  // (16 concurrent requests' prompts no longer shared their first pass).
  const [a, b, c] = ["a", "b", "c"].map(session);
  const { batch } = takeBatch([frame(a, 100), frame(b, 100), frame(c, 5)], 64, 16);
  assertEquals(batch.map((p) => p.take), [16, 16, 5]);
});

Deno.test("SliceClock: a slice is ~1.5 decode passes' worth, and never fewer rows than the pass decodes", () => {
  const clock = new SliceClock();
  const d = session("d");
  assertEquals(clock.limit(64, 11), 64, "nothing measured yet: the cap");
  clock.measure([{ ...frame(d, 1), take: 1 }], 5); // a decode pass of one row: 5 ms
  clock.measure([{ ...frame(d, 10), take: 10 }], 20); // passes with prompt rows: 2 ms a row
  assertEquals(clock.limit(64), 3, "1.5 × 5 ms / 2 ms");
  assertEquals(clock.limit(64, 1), 3, "one stream: the time budget");
  // 11 streams decoding: a 3-row slice kept new sessions waiting for their prompts pass after
  // pass (16 clients on the 110M model: 5 of them in every pass)
  assertEquals(clock.limit(64, 11), 11);
  assertEquals(clock.limit(8, 11), 8, "within the cap");
  assertEquals(clock.limit(0, 11), Infinity, "slicing off");
});
