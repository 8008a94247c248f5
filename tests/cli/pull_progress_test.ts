/**
 * cli/progress.ts's PullProgressView: what `llmctl models pull` writes on stderr — a bar redrawn
 * in place on a terminal, a line every 2 s otherwise, JSON events (progress at most every
 * 500 ms, the last always) with --json.
 */
import { PullProgressView } from "../../cli/progress.ts";
import { assert, assertEquals } from "../support/assert.ts";

function view(mode: "tty" | "lines" | "json") {
  let now = 0;
  const out: string[] = [];
  const v = new PullProgressView({ mode, write: (s) => out.push(s), now: () => now });
  return { v, out, at: (t: number) => (now = t) };
}

const resolved = {
  event: "resolved" as const,
  ref: "hf:o/r:Q8_0",
  file: "m-Q8_0.gguf",
  commit: "0123456789abcdef0123456789abcdef01234567",
  size: 4000,
  cached: false,
};
const progress = (done: number) => ({
  event: "progress" as const,
  file: "m-Q8_0.gguf",
  bytes_done: done,
  bytes_total: 4000,
});

Deno.test("pull progress: lines every 2 s and at the end; a bar in place on a terminal", () => {
  const l = view("lines");
  l.v.update(resolved);
  for (const [t, d] of [[0, 1000], [500, 2000], [2100, 3000], [2200, 4000]]) {
    l.at(t);
    l.v.update(progress(d));
  }
  assertEquals(l.out[0], "hf:o/r:Q8_0: pulling m-Q8_0.gguf (commit 0123456789ab), 4.00 kB\n");
  assertEquals(l.out.length, 4, l.out.join(""));
  assert(l.out[3].includes("100% 4.00 kB/4.00 kB"), l.out[3]);

  const t = view("tty");
  t.v.update(progress(1000));
  t.at(50);
  t.v.update(progress(2000)); // within 100 ms: not redrawn
  t.at(200);
  t.v.update({ event: "retry", file: "m-Q8_0.gguf", attempt: 1, delay_ms: 1000, error: "dropped" });
  t.v.update(progress(4000));
  assertEquals(t.out.filter((s) => s.startsWith("\r\x1b[2K")).length, 2);
  assertEquals(t.out[1], "\n", "an open bar ends before a message");
  assertEquals(t.out.at(-1), "\n");
});

Deno.test("pull progress: --json writes events as JSON lines, progress throttled but the last kept", () => {
  const j = view("json");
  j.v.update(resolved);
  j.v.update(progress(1000));
  j.at(100);
  j.v.update(progress(2000));
  j.at(200);
  j.v.update(progress(4000));
  const events = j.out.map((s) => JSON.parse(s));
  assertEquals(events.map((e) => e.event), ["resolved", "progress", "progress"]);
  assertEquals(events.at(-1).bytes_done, 4000);
});
