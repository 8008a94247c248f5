/** Stop strings across token boundaries; admission control's slots, queue and refusals. */
import { Admission, QueueFullError, StopGate, StopMatcher } from "../../../cluster/api/mod.ts";
import { assert, assertEquals, assertRejects } from "../../support/assert.ts";

function run(stops: string[], pieces: string[]) {
  const m = new StopMatcher(stops);
  const shown: string[] = [];
  for (const p of pieces) {
    const r = m.push(p);
    shown.push(r.text);
    if (r.stopped) return { shown, stopped: true };
  }
  shown.push(m.flush());
  return { shown, stopped: false };
}

Deno.test("a stop string split over tokens is never shown, not even its first half", () => {
  assertEquals(run(["END"], ["x E", "N", "D y"]), { shown: ["x ", "", ""], stopped: true });
  assertEquals(run(["\n\n"], ["Hello\n", "\nWorld"]), { shown: ["Hello", ""], stopped: true });
  // A held prefix that does not complete is released with the next piece.
  assertEquals(run(["END"], ["a E", "x"]), { shown: ["a ", "Ex", ""], stopped: false });
  // Held text at the end of the output is flushed.
  assertEquals(run(["END"], ["a EN"]), { shown: ["a ", "EN"], stopped: false });
  // The earliest of several stop strings wins.
  assertEquals(run(["cd", "b"], ["abcd"]), { shown: ["a"], stopped: true });
  assertEquals(run([], ["a", "b"]), { shown: ["a", "b", ""], stopped: false });
  assertEquals(run([""], ["a"]), { shown: ["a", ""], stopped: false });
});

/** Each piece through a gate (rest: a flushed tail); what came out, and the gate's tail. */
function gate(stops: string[], pieces: string[], rest = "") {
  const g = new StopGate<number>(stops);
  const out: [number, string][] = [];
  for (const [i, p] of pieces.entries()) {
    const r = g.push(i, p);
    out.push(...r.out.map(({ item, text }): [number, string] => [item, text]));
    if (r.stopped) return { out, tail: "", stopped: true };
  }
  const f = g.finish(rest);
  out.push(...f.out.map(({ item, text }): [number, string] => [item, text]));
  return { out, tail: f.tail, stopped: f.stopped };
}

Deno.test("tokens cut by a stop string never come out (their logprobs went to clients)", () => {
  // The tester's case: " A", "n", "n" with stop "nn" sent logprobs for all three tokens.
  assertEquals(gate(["nn"], [" A", "n", "n"]), { out: [[0, " A"]], tail: "", stopped: true });
  // A token holding text before the stop comes out with that part only.
  assertEquals(gate(["END"], ["x E", "N", "D y"]), {
    out: [[0, "x "]],
    tail: "",
    stopped: true,
  });
  // A held prefix that does not complete lets its token through, in order, text whole.
  assertEquals(gate(["END"], ["a", "E", "x"]), {
    out: [[0, "a"], [1, "E"], [2, "x"]],
    tail: "",
    stopped: false,
  });
  // Held tokens come out at the end; the flushed rest (no token's) is the tail.
  assertEquals(gate(["END"], ["a", "EN"], "\uFFFD"), {
    out: [[0, "a"], [1, "EN"]],
    tail: "\uFFFD",
    stopped: false,
  });
  // A stop completed by the flushed rest cuts there, held tokens before it included.
  assertEquals(gate(["ab"], ["x", "a"], "b"), { out: [[0, "x"]], tail: "", stopped: true });
  // Empty pieces (an end-of-generation token, half a character) pass when nothing is held.
  assertEquals(gate([], ["", "a", ""]), {
    out: [[0, ""], [1, "a"], [2, ""]],
    tail: "",
    stopped: false,
  });
  // The texts let through are exactly what StopMatcher shows.
  for (const [stops, pieces] of [[["\n\n"], ["Hello\n", "\nWorld"]], [["xyz"], ["ax", "y", "b"]]]) {
    const shown = run(stops, pieces).shown.join("");
    assertEquals(gate(stops, pieces).out.map(([, t]) => t).join(""), shown);
  }
});

Deno.test("admission: slots, a FIFO queue, 429 when full, abort while queued", async () => {
  const a = new Admission(2, 1);
  const r1 = await a.acquire();
  const r2 = await a.acquire();
  assertEquals(a.stats, { active: 2, queued: 0, maxActive: 2, maxQueued: 1 });
  const third = a.acquire();
  assertEquals(a.stats.queued, 1);
  const err = await assertRejects(() => a.acquire(), QueueFullError);
  assert(err.message.includes("--max-requests"), err.message);
  assertEquals((err as unknown as { httpStatus: number }).httpStatus, 429);
  r1();
  r1(); // idempotent
  const r3 = await third;
  assertEquals(a.stats, { active: 2, queued: 0, maxActive: 2, maxQueued: 1 });
  const ctl = new AbortController();
  const waiting = a.acquire(ctl.signal);
  ctl.abort(new Error("client gone"));
  await assertRejects(() => waiting, Error, "client gone");
  assertEquals(a.stats.queued, 0);
  r2();
  r3();
  assertEquals(a.stats.active, 0);
});

Deno.test("admission: failWaiting answers the whole line at once (shutdown), slots unchanged", async () => {
  const a = new Admission(1, 4);
  const held = await a.acquire();
  const waiting = [a.acquire(), a.acquire()];
  a.failWaiting(new Error("shutting down; ask another agent"));
  for (const w of waiting) await assertRejects(() => w, Error, "ask another agent");
  assertEquals(a.stats, { active: 1, queued: 0, maxActive: 1, maxQueued: 4 });
  held();
  assertEquals(a.stats.active, 0, "the running request's slot comes back as before");
});

Deno.test("admission: onAccepted is called for a slot or a place in line, never for a refusal", async () => {
  const admission = new Admission(1, 1);
  let accepted = 0;
  const slot = await admission.acquire(undefined, () => accepted++);
  assertEquals(accepted, 1, "a free slot");
  const queued = admission.acquire(undefined, () => accepted++);
  assertEquals(accepted, 2, "a place in line, before the slot is its");
  await admission.acquire(undefined, () => accepted++).then(() => null, (e) => e);
  assertEquals(accepted, 2, "a full line refuses without it");
  slot();
  (await queued)();
});
