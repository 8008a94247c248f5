/**
 * `llmctl generate` as a user runs it: Ctrl-C (local and through an agent), and its --help (an
 * agent's refusal is in tests/cli/cluster_commands_test.ts).
 */
import { assert, assertEquals } from "../../support/assert.ts";
import { llmctl, spawnLlmctl } from "../../support/cli.ts";

Deno.test("generate --endpoint: Ctrl-C before the agent answers ends llmctl at once", async () => {
  // An endpoint that accepts connections and never answers (a hung agent).
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  let accepted!: () => void;
  const firstAccepted = new Promise<void>((r) => accepted = r);
  const accepting = (async () => {
    for await (const c of listener) {
      held.push(c);
      accepted();
    }
  })();
  const child = spawnLlmctl([
    "generate",
    "--endpoint",
    `127.0.0.1:${listener.addr.port}`,
    "--timeout",
    "30s",
    "-p",
    "Once upon a time",
  ]);
  try {
    await firstAccepted;
    await new Promise((r) => setTimeout(r, 500));
    const t0 = Date.now();
    child.kill("SIGINT");
    const out = await child.output();
    const ms = Date.now() - t0;
    // Before, the readiness check ignored Ctrl-C and ran on to the whole --timeout.
    assert(ms < 5_000, `llmctl took ${ms} ms to end after Ctrl-C`);
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    assertEquals(stdout, "", "nothing was generated, so nothing is printed");
    assert(stderr.includes("cancelled before the first token"), stderr);
    assert(!/Uncaught|unhandled/i.test(stderr), stderr);
    assertEquals(out.code, 130, "Ctrl-C exits 130 (before, 0: as if the output were whole)");
  } finally {
    listener.close();
    for (const c of held) c.close();
    await accepting.catch(() => {});
  }
});

/**
 * `llmctl generate <args>` run locally; once stdout holds more than `after` characters (the
 * prompt is echoed first), `signals` Ctrl-Cs. Its exit code, stdout and stderr.
 */
async function interrupted(args: string[], after: number, signals = 1) {
  const child = spawnLlmctl(["generate", ...args]);
  let stdout = "";
  const decoder = new TextDecoder();
  const reading = (async () => {
    for await (const chunk of child.stdout) stdout += decoder.decode(chunk, { stream: true });
  })();
  const stderr = new Response(child.stderr).text();
  const end = Date.now() + 60_000;
  while (stdout.length <= after && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 2));
  }
  for (let i = 0; i < signals; i++) child.kill("SIGINT");
  const status = await child.status;
  await reading;
  return { code: status.code, stdout, stderr: await stderr };
}

Deno.test("generate (local): Ctrl-C stops between tokens, prints what came with its figures, exits 130", async () => {
  const prompt = "Once upon a time";
  const r = await interrupted(
    ["--backend", "reference", "--ignore-eos", "-n", "500", "-p", prompt],
    prompt.length + 8,
  );
  // Before, Deno's default action killed llmctl at once: no figures, and the partial output
  // could not be told from a whole one but by the signal.
  assertEquals(r.code, 130, r.stderr);
  assert(r.stdout.startsWith(prompt) && r.stdout.length > prompt.length, r.stdout);
  assert(/\d+ tokens at [\d.]+ tokens\/s \(reference\), cancelled/.test(r.stderr), r.stderr);
  const tokens = Number(/, (\d+) tokens at/.exec(r.stderr)?.[1]);
  assert(tokens < 500, `generation ran on to ${tokens} tokens after Ctrl-C`);
});

Deno.test("generate (local): Ctrl-C before the first token says so (no NaN tokens/s); two Ctrl-Cs exit 130 too", async () => {
  // A prompt long enough that its pass is still running when Ctrl-C comes (it is echoed first).
  const prompt = "Once upon a time ".repeat(400).trim();
  const args = ["--backend", "reference", "--ctx", "2048", "-n", "5", "-p", prompt];
  const once = await interrupted(args, prompt.length - 1);
  assertEquals(once.code, 130, once.stderr);
  // Before: "… 0 tokens at NaN tokens/s (reference), cancelled".
  assert(/^cancelled before the first token, after [\d.]+ ms$/m.test(once.stderr), once.stderr);
  assert(!once.stderr.includes("NaN"), once.stderr);
  const twice = await interrupted(args, prompt.length - 1, 2);
  assertEquals(twice.code, 130, twice.stderr);
});

Deno.test("generate --help names every key --json adds through the cluster", async () => {
  const r = await llmctl(["generate", "--help"]);
  assertEquals(r.code, 0, r.stderr);
  const help = r.stdout.replace(/\s+/g, " ");
  // The keys README's table lists for `generate --endpoint … --json`; "recoveries" was missing.
  for (const k of ["prompt_token_count", "endpoint", "placement", "recoveries"]) {
    assert(help.includes(`"${k}"`), `--help lacks "${k}": ${r.stdout}`);
  }
});
