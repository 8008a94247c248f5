/**
 * The head over in-process stages: a split model gives the single-node goldens, and a stage that
 * dies mid-generation is replaced and replayed with identical output.
 */
import { createReferenceBackend } from "../../../kernels/reference/mod.ts";
import { openGGUF } from "../../../model/gguf/mod.ts";
import { LlamaStage } from "../../../model/llama.ts";
import {
  type ChainProvider,
  Head,
  type HeadOptions,
  LocalStageLink,
  NoPlacementError,
  type SessionOpen,
  StageHost,
  stageKey,
  type StageLink,
  StageLinkError,
  StaleEpochError,
} from "../../../cluster/pipeline/mod.ts";
import { assert, assertEquals, assertRejects } from "../../support/assert.ts";
import { FIXTURES } from "../../support/paths.ts";

const GOLDEN = JSON.parse(await Deno.readTextFile(`${FIXTURES}/golden/stories260K__once.json`));

async function hosts(ranges: [number, number][]): Promise<StageHost[]> {
  const file = await openGGUF(`${FIXTURES}/models/stories260K.gguf`);
  const out: StageHost[] = [];
  for (const [from, to] of ranges) {
    out.push(
      new StageHost(
        await LlamaStage.load(file, createReferenceBackend(), { from, to }),
        "stories260K",
      ),
    );
  }
  file.close();
  return out;
}

/** Stages by node id: how an in-process stage reaches the next one in a chain. */
const registry = new Map<string, StageLink>();

/** An in-process stage that forwards to the next one through the registry. */
function local(id: string, host: StageHost): StageLink {
  const link = new LocalStageLink(id, host, {
    linkTo: (hop) => registry.get(hop.nodeId)!,
  });
  registry.set(id, link);
  return link;
}

/** A link that can be killed: afterwards every call fails like a broken connection. */
class KillableLink implements StageLink {
  dead = false;
  constructor(readonly inner: StageLink, readonly killAfterSteps = Infinity) {
    registry.set(inner.nodeId, this);
  }
  steps = 0;
  get nodeId() {
    return this.inner.nodeId;
  }
  get from() {
    return this.inner.from;
  }
  get to() {
    return this.inner.to;
  }
  async openSession(open: SessionOpen) {
    if (this.dead) throw new StageLinkError("connection refused", this.nodeId);
    const s = await this.inner.openSession(open);
    return {
      step: (f: Parameters<typeof s.step>[0]) => {
        if (this.dead || ++this.steps > this.killAfterSteps) {
          this.dead = true;
          return Promise.reject(new StageLinkError("stream reset", this.nodeId));
        }
        return s.step(f);
      },
      close: (r: string) => s.close(r),
    };
  }
}

function provider(candidates: StageLink[]): ChainProvider {
  return {
    chain: ({ exclude }) => {
      // First live candidate for each layer range, in order.
      const chain: StageLink[] = [];
      let at = 0;
      while (at < 5) {
        const next = candidates.find((c) =>
          c.from === at && !exclude.has(stageKey(c.nodeId)) && !(c as KillableLink).dead
        );
        if (!next) {
          return Promise.reject(new NoPlacementError(`layers ${at}..5 have no live stage`));
        }
        chain.push(next);
        at = next.to;
      }
      return Promise.resolve(chain);
    },
  };
}

const request = (extra = {}) => ({
  requestId: "r1",
  promptTokens: GOLDEN.prompt_tokens as number[],
  maxTokens: 64,
  sampling: { temperature: 0 },
  isEog: () => false,
  maxContext: 256,
  ...extra,
});

Deno.test("three in-process stages reproduce the single-node golden", async () => {
  const [a, b, c] = await hosts([[0, 2], [2, 4], [4, 5]]);
  const head = new Head(
    provider([local("a", a), local("b", b), local("c", c)]),
  );
  const r = await head.generate(request());
  assertEquals(r.tokens.map((t) => t.id), GOLDEN.greedy_ids.slice(0, 64));
  assertEquals(r.finishReason, "length");
  for (const h of [a, b, c]) {
    assertEquals(h.openSessions, 0, "sessions are closed after the request");
  }
});

Deno.test("two requests under one client-chosen id run side by side (sessions get a nonce)", async () => {
  // A client retrying with the same id while the first try's sessions are still open on the
  // stages got "session r1.0.0 is already open" before the head added a nonce per run.
  const [a, b] = await hosts([[0, 3], [3, 5]]);
  const head = new Head(provider([local("a", a), local("b", b)]));
  const [r1, r2] = await Promise.all([
    head.generate(request({ maxTokens: 16 })),
    head.generate(request({ maxTokens: 16 })),
  ]);
  assertEquals(r1.tokens.map((t) => t.id), GOLDEN.greedy_ids.slice(0, 16));
  assertEquals(r2.tokens.map((t) => t.id), GOLDEN.greedy_ids.slice(0, 16));
});

Deno.test("the middle stage dies mid-generation: replayed on a replacement, output identical", async () => {
  const [a, b, c, b2] = await hosts([[0, 2], [2, 4], [4, 5], [2, 4]]);
  const middle = new KillableLink(local("b", b), 20);
  const logs: string[] = [];
  const reported: string[] = [];
  const resumed: Parameters<NonNullable<HeadOptions["onResumed"]>>[0][] = [];
  const head = new Head(
    provider([
      local("a", a),
      middle,
      local("c", c),
      local("b2", b2),
    ]),
    {
      log: (m) => logs.push(m),
      onStageFailure: (id) => reported.push(id),
      onResumed: (x) => resumed.push(x),
    },
  );
  const r = await head.generate(request());
  assertEquals(r.tokens.map((t) => t.id), GOLDEN.greedy_ids.slice(0, 64));
  assertEquals(r.failures.map((f) => f.nodeId), ["b"]);
  // One resumption, on the new chain, replaying what the failure log announced.
  assertEquals(resumed.length, 1);
  assertEquals(resumed[0].chain, "a[0,2) → b2[2,4) → c[4,5)");
  assert(logs[0].includes(`replaying ${resumed[0].replayedTokens} tokens`), logs[0]);
  assert(resumed[0].waitedMs >= 0 && resumed[0].replayMs >= 0, JSON.stringify(resumed[0]));
  assertEquals(reported, ["b"], "the failed stage is reported (the agent probes it now)");
  assertEquals(r.chains.map((ch) => ch.map((s) => s.nodeId).join(",")), ["a,b,c", "a,b2,c"]);
  assert(logs[0].includes("replaying"), logs[0]);
});

Deno.test("a replay that finds the replacement full waits for room; a new request is refused", async () => {
  const [a, b, c] = await hosts([[0, 2], [2, 4], [4, 5]]);
  const file = await openGGUF(`${FIXTURES}/models/stories260K.gguf`);
  const b2 = new StageHost(
    await LlamaStage.load(file, createReferenceBackend(), { from: 2, to: 4 }),
    "stories260K",
    { maxSessions: 1 },
  );
  file.close();
  // The survivor holds as many sessions as it may (another replica's sessions moved there).
  b2.open("occupant", 16);
  const fresh = new Head(provider([local("a", a), local("b2", b2), local("c", c)]));
  const refused = await fresh.generate(request({ maxTokens: 4 })).then(() => null, (e) => e);
  assert(/holds 1 sessions already/.test(String(refused)), `a new request is refused: ${refused}`);
  const head = new Head(
    provider([local("a", a), new KillableLink(local("b", b), 20), local("c", c), local("b2", b2)]),
  );
  let freed = false;
  const generating = head.generate(request());
  // Room appears 300 ms after the failure (the occupant ends); the client meanwhile waits.
  const timer = setTimeout(() => {
    freed = true;
    b2.close("occupant");
  }, 300);
  try {
    const r = await generating;
    assert(freed, "the replay waited for room");
    assertEquals(r.tokens.map((t) => t.id), GOLDEN.greedy_ids.slice(0, 64));
    assertEquals(r.failures.map((f) => f.nodeId), ["b"], "waiting for room blames nobody");
  } finally {
    clearTimeout(timer);
  }
});

Deno.test("a cancel ends the request at once: mid-prefill, and while waiting for a re-placement", async () => {
  const [a, b] = await hosts([[0, 3], [3, 5]]);
  // The second stage answers its first frame (the prompt) only when the gate opens: a long
  // prefill, or a slow stage.
  const gate = Promise.withResolvers<void>();
  const stalled: StageLink = {
    nodeId: "b",
    from: 3,
    to: 5,
    openSession: async (open) => {
      const inner = await local("b", b).openSession(open);
      return {
        step: async (f) => {
          await gate.promise;
          return inner.step(f);
        },
        close: (r) => inner.close(r),
      };
    },
  };
  registry.set("b", stalled);
  const ctl = new AbortController();
  const head = new Head(provider([local("a", a), stalled]));
  const t0 = performance.now();
  setTimeout(() => ctl.abort(), 100);
  const r = await head.generate(request({ signal: ctl.signal }));
  assertEquals(r.finishReason, "cancelled");
  assertEquals(r.tokens.length, 0);
  assert(performance.now() - t0 < 2000, `ended after ${performance.now() - t0} ms`);
  gate.resolve();
  await new Promise((res) => setTimeout(res, 20));
  for (const h of [a, b]) assertEquals(h.openSessions, 0, "the sessions were closed");

  // A stage failed and no replacement is in sight: the wait for one (as GossipChainProvider
  // waits, up to the recovery timeout) ends with the cancel too.
  const dying = new KillableLink(local("b", b), 3);
  const waiting = new Head({
    chain: ({ signal }) =>
      dying.dead
        ? new Promise((_, reject) => signal?.addEventListener("abort", () => reject(signal.reason)))
        : Promise.resolve([local("a", a), dying]),
  }, { recoveryTimeoutMs: 30_000 });
  const ctl2 = new AbortController();
  const t1 = performance.now();
  setTimeout(() => ctl2.abort(), 300);
  const r2 = await waiting.generate(request({ signal: ctl2.signal }));
  assert(dying.dead, "the stage failed first");
  assertEquals(r2.finishReason, "cancelled");
  assertEquals(r2.tokens.length, 3, "the tokens before the failure stay");
  assert(performance.now() - t1 < 5000, `ended after ${performance.now() - t1} ms`);
});

Deno.test("seeded sampling survives a failure with the same tokens", async () => {
  const sampling = { temperature: 1, topK: 0, topP: 1, minP: 0, seed: 1234 };
  const [a, b, c] = await hosts([[0, 2], [2, 4], [4, 5]]);
  const clean = await new Head(
    provider([local("a", a), local("b", b), local("c", c)]),
  )
    .generate(request({ sampling }));
  const [a2, b2, c2, c3] = await hosts([[0, 2], [2, 4], [4, 5], [4, 5]]);
  const tail = new KillableLink(local("c", c2), 30);
  const faulty = await new Head(
    provider([
      local("a", a2),
      local("b", b2),
      tail,
      local("c3", c3),
    ]),
  )
    .generate(request({ sampling }));
  assertEquals(faulty.tokens.map((t) => t.id), clean.tokens.map((t) => t.id));
  assertEquals(faulty.failures.length, 1);
});

Deno.test("an in-process stage chosen by a range it no longer runs, or replaced since, refuses as stale", async () => {
  const [host] = await hosts([[0, 3]]);
  // The chain chose this agent's own stage as [0, 5) (an announcement of an earlier range).
  const link = new LocalStageLink("me", host, { chosen: { from: 0, to: 5 } });
  assertEquals([link.from, link.to], [0, 5], "the chain's view, not the host's");
  /** What opening a sampling session on `l` throws (null when it opens). */
  const refusal = (l: StageLink, sessionId: string) =>
    l.openSession({
      sessionId,
      maxContext: 16,
      model: "stories260K",
      epoch: 0n,
      sampling: { temperature: 0 },
      downstream: [],
    }).then(() => null, (e) => e);
  const e = await refusal(link, "s");
  assert(e instanceof StaleEpochError, `expected StaleEpochError, got ${e}`);
  assert(e.message.includes("me runs layers [0, 3), the session asked for [0, 5)"), e.message);
  assertEquals(host.openSessions, 0);
  // The agent loaded another stage after the chain was read: the link holds a freed host.
  const [old] = await hosts([[0, 5]]);
  const held = new LocalStageLink("me", old, { chosen: { from: 0, to: 5 } });
  old.dispose();
  const replaced = await refusal(held, "s2");
  assert(replaced instanceof StaleEpochError, `expected StaleEpochError, got ${replaced}`);
  assert(replaced.message.includes("was replaced"), replaced.message);
  // Replaced but not freed yet (its old sessions still run on it): new ones go to the new host.
  const [kept, now] = await hosts([[0, 5], [0, 5]]);
  const lingering = new LocalStageLink("me", kept, { current: () => now });
  const moved = await refusal(lingering, "s4");
  assert(moved instanceof StaleEpochError, `expected StaleEpochError, got ${moved}`);
  assertEquals(kept.openSessions, 0);
  // And the host itself opens nothing on freed weights (a recoverable "unavailable").
  let code = "";
  try {
    old.open("s3", 16);
  } catch (err) {
    code = (err as { code?: string }).code ?? "";
  }
  assertEquals(code, "unavailable");
});

Deno.test("no replacement: a clear error naming the missing layers", async () => {
  const [a, b, c] = await hosts([[0, 2], [2, 4], [4, 5]]);
  const head = new Head(
    provider([
      local("a", a),
      new KillableLink(local("b", b), 3),
      local("c", c),
    ]),
  );
  await assertRejects(() => head.generate(request()), NoPlacementError, "layers 2..5");
});

Deno.test("stop via onToken and eog end the request early", async () => {
  const [a] = await hosts([[0, 5]]);
  const head = new Head(provider([local("a", a)]));
  const r = await head.generate(request({ onToken: (_t: unknown, i: number) => i < 4 }));
  assertEquals(r.tokens.length, 5);
  assertEquals(r.finishReason, "stopped");
  const eos = await head.generate(request({ isEog: (id: number) => id === GOLDEN.greedy_ids[2] }));
  assertEquals(eos.tokens.length, 3);
  assertEquals(eos.finishReason, "stop");
});

Deno.test("a stage on another placement epoch: the head reads the chain again, blaming nobody", async () => {
  const [a, b] = await hosts([[0, 3], [3, 5]]);
  // b has not seen the plan the head planned with yet; it converges after two refusals.
  let refusals = 0;
  const stageEpoch = () => (refusals < 2 ? 6n : 7n);
  const links = new Map<string, StageLink>();
  const linkTo = (hop: { nodeId: string }) => links.get(hop.nodeId)!;
  links.set("a", new LocalStageLink("a", a, { epoch: () => 7n, linkTo }));
  const inner = new LocalStageLink("b", b, { epoch: stageEpoch, linkTo });
  links.set("b", {
    nodeId: "b",
    from: 3,
    to: 5,
    openSession: (open: SessionOpen) =>
      inner.openSession(open).catch((e) => {
        refusals++;
        throw e;
      }),
  });
  const reported: string[] = [];
  const head = new Head({
    chain: () => Promise.resolve([links.get("a")!, links.get("b")!]),
    epoch: () => 7n,
  }, { onStageFailure: (id) => reported.push(id) });
  const r = await head.generate(request());
  assertEquals(refusals, 2, "b refused the stale sessions");
  assertEquals(reported, [], "nobody is reported for a stale epoch");
  assertEquals(r.tokens.map((t) => t.id), GOLDEN.greedy_ids.slice(0, 64));
  assertEquals(r.failures, [], "a stale epoch is not a stage failure");
  assertEquals(a.openSessions + b.openSessions, 0, "the refused sessions were freed");
});

Deno.test("a stage's 'opener gone' message names the opener back to the head, relayed or not", async () => {
  const { goneOpener, openerGoneMessage } = await import(
    "../../../cluster/pipeline/stage_errors.ts"
  );
  for (const id of ["a", "node-1.zone_b", "x".repeat(63)]) {
    assertEquals(goneOpener(openerGoneMessage(id)), id);
    // As the head reads it: relayed up the chain inside another stage's failure.
    assertEquals(goneOpener(`the stage on b failed: [unavailable] ${openerGoneMessage(id)}`), id);
  }
  assertEquals(goneOpener("stage b is gone (gossip)"), undefined);
});

Deno.test("a stage that keeps taking this head for gone is blamed after the take-back grace, so the request moves on", async () => {
  const { openerGoneMessage } = await import("../../../cluster/pipeline/stage_errors.ts");
  // b1's gossip never hears this head again (a one-sided fault): it closes every session as
  // that of a gone opener. b2 hosts the same layers.
  const [a, b1, b2, c] = await hosts([[0, 2], [2, 4], [2, 4], [4, 5]]);
  const deaf = new class extends KillableLink {
    override async openSession(open: SessionOpen) {
      const s = await this.inner.openSession(open);
      return {
        step: () => Promise.reject(new StageLinkError(openerGoneMessage("head-1"), this.nodeId)),
        close: (r: string) => s.close(r),
      };
    }
  }(local("b1", b1));
  const head = new Head(provider([local("a", a), deaf, local("b2", b2), local("c", c)]), {
    nodeId: "head-1",
    takeBackMs: 300,
  });
  const t0 = performance.now();
  const r = await head.generate(request({ maxTokens: 8 }));
  // Before, the head waited for b1 to take it back until the recovery timeout (30 s), then
  // failed with "the stages did not take this head back".
  assertEquals(r.tokens.map((t) => t.id), GOLDEN.greedy_ids.slice(0, 8));
  assert(performance.now() - t0 < 5000, `${performance.now() - t0} ms`);
  assertEquals(r.failures.map((f) => f.nodeId), ["head-1", "b1"]);
});
