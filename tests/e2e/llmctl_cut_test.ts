/**
 * `llmctl generate` against an agent that freezes mid-stream (hunt 4, F5): it said "no agent at
 * …, start one with `deno task agent`" and exited 3 after printing 1100 tokens. Now it says the
 * agent stopped answering and the output is incomplete, and exits 1.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { startCluster, stopAll } from "../support/agents.ts";
import { STORIES } from "../support/paths.ts";
import { spawnLlmctl } from "../support/cli.ts";

Deno.test("llmctl generate: a head frozen mid-stream is an incomplete output (exit 1), not 'no agent'", async () => {
  const [agent] = await startCluster(["a"], {
    model: STORIES,
    extra: ["--backend", "reference", "--context-size", "4096"],
  });
  const child = spawnLlmctl([
    "generate",
    "--endpoint",
    `127.0.0.1:${agent.rpcPort}`,
    "--timeout",
    "1s",
    "-p",
    "Once upon a time",
    "-n",
    "4000",
  ]);
  let out = 0;
  const reading = (async () => {
    for await (const chunk of child.stdout) out += chunk.length;
  })();
  const stderr = new Response(child.stderr).text();
  try {
    for (const end = Date.now() + 60_000; out < 200;) {
      assert(Date.now() < end, "the stream never started");
      await new Promise((r) => setTimeout(r, 20));
    }
    agent.child.kill("SIGSTOP");
    const status = await child.status;
    const text = await stderr;
    assertEquals(status.code, 1, text);
    assert(/stopped answering after \d+ messages/.test(text), text);
    assert(text.includes("incomplete") && !text.includes("no agent at"), text);
  } finally {
    agent.child.kill("SIGCONT");
    await reading.catch(() => {});
    await stopAll([agent]);
  }
});
