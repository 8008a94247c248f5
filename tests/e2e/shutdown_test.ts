/**
 * SIGTERM on a real agent process with a generation in flight: it finishes within
 * --shutdown-grace, and what the grace cannot save ends with an error event, never with
 * finish_reason "stop" (issue 16, item 4).
 */
import { assert, assertEquals } from "../support/assert.ts";
import { createClient } from "@connectrpc/connect";
import { DiscoveryService, InferenceService } from "../../proto/mod.ts";
import {
  generate,
  startAgent,
  startCluster,
  stopAll,
  waitForPlacement,
} from "../support/agents.ts";
import { STORIES } from "../support/paths.ts";

/** The SSE events of one streamed completion; `onFirst` runs when the first token arrives. */
async function streamCompletion(port: number, maxTokens: number, onFirst: () => void) {
  const res = await fetch(`http://127.0.0.1:${port}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: "stories260K",
      prompt: "Once upon a time",
      max_tokens: maxTokens,
      temperature: 0,
      stream: true,
    }),
  });
  assertEquals(res.status, 200);
  const events: Record<string, unknown>[] = [];
  let buf = "";
  let first = true;
  for await (const chunk of res.body!.pipeThrough(new TextDecoderStream())) {
    buf += chunk;
    let at;
    while ((at = buf.indexOf("\n\n")) >= 0) {
      const line = buf.slice(0, at).replace(/^data: /, "");
      buf = buf.slice(at + 2);
      if (line === "[DONE]") continue;
      events.push(JSON.parse(line));
      if (first) {
        first = false;
        onFirst();
      }
    }
  }
  const choices = events.flatMap((e) =>
    (e.choices as { text: string; finish_reason: string | null }[] | undefined) ?? []
  );
  return {
    text: choices.map((c) => c.text).join(""),
    finish: choices.map((c) => c.finish_reason).filter((f) => f !== null),
    error: events.find((e) => e.error)?.error as { message: string } | undefined,
  };
}

const args = (grace: string) => ["--context-size", "2048", "--shutdown-grace", grace];

Deno.test("SIGTERM lets a generation in flight finish within --shutdown-grace", async () => {
  const [agent] = [await startAgent({ id: "solo", model: STORIES, extra: args("30s") })];
  try {
    const whole = await streamCompletion(agent.httpPort, 400, () => {});
    assertEquals(whole.finish.length, 1);
    // While it drains, every readiness answer turns to "not serving" (it used to say serving
    // until the agent stopped, so a load balancer kept sending requests that were refused).
    const seen: string[] = [];
    let streaming = true;
    let polls: Promise<void> = Promise.resolve();
    const cut = await streamCompletion(agent.httpPort, 400, () => {
      agent.child.kill("SIGTERM");
      polls = (async () => {
        while (streaming) {
          try {
            const ready = await fetch(`http://127.0.0.1:${agent.metricsPort}/health?ready=1`);
            const api = await (await fetch(`http://127.0.0.1:${agent.httpPort}/health`)).json();
            await ready.body?.cancel();
            seen.push(`${ready.status} ${api.status}`);
          } catch { /* the agent has closed its ports */ }
          await new Promise((r) => setTimeout(r, 5));
        }
      })();
    });
    streaming = false;
    await polls;
    assert(seen.includes("503 draining"), `readiness while draining: ${seen.join(", ")}`);
    assertEquals(cut.error, undefined);
    assertEquals(cut.finish, whole.finish);
    assertEquals(cut.text, whole.text, "the drained generation is the whole generation");
    assertEquals((await agent.exited).code, 0);
  } finally {
    await stopAll([agent]);
  }
});

Deno.test("what --shutdown-grace cannot save ends with an error, never finish_reason stop", async () => {
  const agent = await startAgent({ id: "solo", model: STORIES, extra: args("0ms") });
  try {
    const cut = await streamCompletion(agent.httpPort, 1900, () => agent.child.kill("SIGTERM"));
    assertEquals(cut.finish, [], `a cut-off generation reported ${cut.finish}`);
    assert(cut.error, "the stream ended without saying it was cut off");
    assert(/shut down after \d+ tokens/.test(cut.error.message), cut.error.message);
    assertEquals((await agent.exited).code, 0);
  } finally {
    await stopAll([agent]);
  }
});

Deno.test("SIGTERM on a stage another agent heads through: the session runs to its end there, no replay", async () => {
  // No two agents hold the model: a chain of at least 3 stages, the victim in its middle.
  const agents = await startCluster(["a", "b", "c", "d"], {
    model: STORIES,
    memoryBudget: "1.2MB",
    extra: ["--shutdown-grace", "60s"],
  });
  try {
    const stages = (await waitForPlacement(agents[0], 4)).placement!.stages;
    assert(stages.length >= 3, `a chain of at least 3 stages: ${stages.length}`);
    const victim = agents.find((a) => a.id === stages[1].nodeId)!;
    const head = agents.find((a) => a.id === stages[0].nodeId)!;
    const prompt = "Once upon a time";
    const whole = await generate(head, prompt, 160);
    const tokens: number[] = [];
    let recoveries = -1;
    let exitedFirst = false;
    victim.exited.then(() => exitedFirst = recoveries < 0);
    // When the head's placement first leaves the victim out (it hands its layers over at once,
    // where the others can hold the model, instead of when it leaves).
    let handedOverFirst: boolean | undefined;
    const discovery = createClient(DiscoveryService, head.transport);
    const watching = (async () => {
      while (recoveries < 0) {
        const info = await discovery.getClusterInfo({}).catch(() => undefined);
        const ids = info?.placement?.stages.map((s) => s.nodeId) ?? [];
        if (tokens.length >= 5 && ids.length > 0 && !ids.includes(victim.id)) {
          handedOverFirst ??= recoveries < 0;
        }
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    for await (
      const m of createClient(InferenceService, head.transport).generate({
        prompt,
        maxTokens: 160,
        sampler: { temperature: 0 },
      })
    ) {
      if (m.finishReason) {
        recoveries = m.usage?.recoveries ?? 0;
        break;
      }
      tokens.push(m.tokenId);
      if (tokens.length === 5) victim.child.kill("SIGTERM");
    }
    assertEquals(tokens, whole.tokens);
    // Before, the stage left at once (it headed nothing) and the head replayed elsewhere.
    assertEquals(recoveries, 0, "the generation finished on the chain it started on");
    assertEquals((await victim.exited).code, 0);
    assert(!exitedFirst, "the stage left before the session through it ended");
    const drained = victim.logs.find((l) => l.msg === "draining");
    assert(drained && (drained.sessions as number) >= 1, JSON.stringify(drained));
    await watching;
    // Before, new requests kept being sent to the draining stage (each refused and replayed)
    // until it left, after the last session through it ended.
    assertEquals(handedOverFirst, true, "the placement left the victim out while it drained");
    assert(victim.logs.some((l) => l.msg === "shutting down: layers move"));
  } finally {
    await stopAll(agents);
  }
});
