/**
 * The TUI without a terminal: the reducer over an update stream, key parsing, and the layout at
 * 80×24 and 200×60 on every tab (with the help overlay and glitches) never overflowing a line.
 */
import { create } from "@bufbuild/protobuf";
import {
  GlitchEngine,
  initialState,
  interpret,
  parseKeys,
  reduce,
  render,
  sanitize,
  TABS,
  type TuiState,
  wrap,
} from "../../../cli/tui/mod.ts";
import {
  LayerRangeSchema,
  MembershipEventSchema,
  NodeInfoSchema,
  NodeMetricsSchema,
  NodeState,
  PlacementEventSchema,
  PlacementSchema,
  RequestEventSchema,
  RequestPhase,
  StageAssignmentSchema,
  type StreamUpdatesResponse,
  StreamUpdatesResponseSchema,
  TransferProgressSchema,
  TransferState,
} from "../../../proto/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";

let seq = 0n;
function msg(event: StreamUpdatesResponse["event"]): StreamUpdatesResponse {
  return create(StreamUpdatesResponseSchema, {
    sequence: ++seq,
    timestampUnixMs: 1_700_000_000_000n + seq,
    event,
  });
}

function member(id: string, state: NodeState, from?: number, to?: number) {
  return msg({
    case: "membership",
    value: create(MembershipEventSchema, {
      node: create(NodeInfoSchema, {
        id,
        state,
        addresses: ["127.0.0.1"],
        rpcPort: 7950,
        backend: "wasm",
        adapter: "cpu (wasm simd, 8 threads) with a very long adapter description indeed",
        calibrationGflops: 12.5,
        version: "0.1.0",
        hosted: from === undefined
          ? undefined
          : create(LayerRangeSchema, { model: "m.gguf", fromLayer: from, toLayer: to }),
      }),
    }),
  });
}

/** A cluster of `n` nodes splitting 32 layers, a request in flight and metrics. */
function busyState(n: number): TuiState {
  let s = reduce(initialState("127.0.0.1:7950"), { type: "connected", at: 1 });
  const per = Math.ceil(32 / n);
  const stages = [];
  for (let i = 0; i < n; i++) {
    const id = `node-${String.fromCharCode(97 + i)}-with-a-long-name`;
    const from = i * per;
    const to = Math.min(32, from + per);
    s = reduce(s, { type: "update", msg: member(id, NodeState.ALIVE, from, to) });
    stages.push(create(StageAssignmentSchema, { nodeId: id, fromLayer: from, toLayer: to }));
  }
  s = reduce(s, {
    type: "update",
    msg: msg({
      case: "placement",
      value: create(PlacementEventSchema, {
        reason: "node joined",
        placement: create(PlacementSchema, { model: "m.gguf", totalLayers: 32, epoch: 3n, stages }),
      }),
    }),
  });
  for (let i = 0; i < 30; i++) {
    s = reduce(s, {
      type: "update",
      msg: msg({
        case: "metrics",
        value: create(NodeMetricsSchema, {
          nodeId: stages[0].nodeId,
          cpuPercent: 40 + i,
          tokensPerSecond: i % 7,
          memoryTotalBytes: 64_000_000_000n,
          memoryAvailableBytes: 12_000_000_000n,
        }),
      }),
    });
  }
  s = reduce(s, {
    type: "update",
    msg: msg({
      case: "request",
      value: create(RequestEventSchema, {
        requestId: "req-1",
        phase: RequestPhase.FAILED,
        headNodeId: stages[0].nodeId,
        detail: "x".repeat(300),
      }),
    }),
  });
  for (
    const [i, state] of [TransferState.FETCHING, TransferState.LOADED, TransferState.FAILED]
      .entries()
  ) {
    s = reduce(s, {
      type: "update",
      msg: msg({
        case: "transfer",
        value: create(TransferProgressSchema, {
          nodeId: `node-${i}-with-a-long-name`,
          model: "m.gguf",
          state,
          bytesDone: 123_000_000n * BigInt(i + 1),
          bytesTotal: 400_000_000n,
          bytesPerSecond: 88e6,
          etaSeconds: 3.2,
          detail: i === 2 ? "x".repeat(200) : "",
        }),
      }),
    });
  }
  s = reduce(s, { type: "inferStart", requestId: "r", at: 10 });
  s = reduce(s, {
    type: "inferToken",
    text: "Once upon a time 漢字 🎉 there was\ta\nlong " + "story ".repeat(200),
    at: 20,
  });
  return s;
}

function assertFits(lines: string[], w: number, h: number, what: string) {
  assertEquals(lines.length, h, `${what}: ${lines.length} lines`);
  lines.forEach((l, i) => {
    assertEquals([...l].length, w, `${what}: line ${i} is ${[...l].length} wide: ${l}`);
  });
}

for (const [w, h] of [[80, 24], [200, 60]]) {
  Deno.test(`every tab renders at ${w}×${h} without overflowing a line`, () => {
    for (const n of [1, 2, 7, 40]) {
      let s = busyState(n);
      for (let tab = 0; tab < TABS.length; tab++) {
        for (
          const extra of [{}, { help: true }, { expanded: true, filter: "node", filtering: true }]
        ) {
          const st = { ...s, ...extra };
          const frame = render(st, { width: w, height: h, now: 1_700_000_000_000, glitch: "3" });
          assertFits(frame.screen.lines(), w, h, `${TABS[tab]} with ${n} nodes`);
          const fx = new GlitchEngine({ enabled: true, intensity: 5, seed: 7 });
          fx.burst(0);
          fx.nodeChanged("node-a-with-a-long-name", "dead", 0);
          const glitched = fx.apply(frame.screen, frame.regions, 10);
          assertFits(glitched.lines(), w, h, `${TABS[tab]} glitched`);
        }
        s = reduce(s, { type: "tab", delta: 1 });
      }
    }
    // The boot sequence, and a terminal that is too small.
    const boot = render(initialState("x"), {
      width: w,
      height: h,
      now: 0,
      glitch: "off",
      boot: 0.5,
    });
    assertFits(boot.screen.lines(), w, h, "boot");
  });
}

Deno.test("a terminal below 80×24 gets a message, not a broken layout", () => {
  const f = render(busyState(2), { width: 60, height: 20, now: 0, glitch: "off" });
  assertFits(f.screen.lines(), 60, 20, "small");
  assert(f.screen.lines()[1].includes("80×24"));
});

Deno.test("the cluster tab shows each node with its layer range", () => {
  const f = render(busyState(2), { width: 80, height: 24, now: 0, glitch: "off" });
  const text = f.screen.lines().join("\n");
  assert(text.includes("layers [0,16) of 32"), text);
  assert(text.includes("layers [16,32) of 32"), text);
  assert(f.regions["node:node-a-with-a-long-name"], "node boxes are regions for effects");
});

Deno.test("reducer: membership transitions become events; dead nodes stay listed", () => {
  let s = initialState("e");
  s = reduce(s, { type: "update", msg: member("b", NodeState.ALIVE, 0, 2) });
  s = reduce(s, { type: "update", msg: member("b", NodeState.SUSPECT, 0, 2) });
  s = reduce(s, { type: "update", msg: member("b", NodeState.DEAD, 0, 2) });
  assertEquals(s.nodes.b.state, NodeState.DEAD);
  assertEquals(s.nodes.b.previous, NodeState.SUSPECT);
  assertEquals(s.events.map((e) => e.text), [
    "node b alive (wasm, layers [0,2))",
    "node b: alive → suspect",
    "node b: suspect → dead",
  ]);
  assertEquals(s.events.map((e) => e.level), ["ok", "warn", "bad"]);
});

Deno.test("reducer: a sequence gap counts dropped events", () => {
  let s = initialState("e");
  s = reduce(s, { type: "update", msg: member("a", NodeState.ALIVE) });
  seq += 5n;
  s = reduce(s, { type: "update", msg: member("b", NodeState.ALIVE) });
  assertEquals(s.droppedEvents, 5);
});

Deno.test("keys: escape sequences, and what they mean where", () => {
  assertEquals(parseKeys("\t\x1b[Z\x1b[A\x1b[Bjq\r\x7f\x03\x1b"), [
    { name: "tab" },
    { name: "shift-tab" },
    { name: "up" },
    { name: "down" },
    { char: "j" },
    { char: "q" },
    { name: "enter" },
    { name: "backspace" },
    { name: "ctrl-c" },
    { name: "esc" },
  ]);
  let s = initialState("e");
  assertEquals(interpret(s, { char: "q" }).commands, [{ type: "quit" }]);
  assertEquals(interpret(s, { char: "3" }).commands, [{ type: "glitchLevel", level: 3 }]);
  s = reduce(s, { type: "tab", delta: 3 });
  assertEquals(TABS[s.tab], "INFERENCE");
  s = reduce(s, interpret(s, { name: "enter" }).actions[0]);
  assertEquals(s.inference.editing, true);
  // While editing, q is text, enter sends.
  assertEquals(interpret(s, { char: "q" }).actions, [{ type: "promptInput", text: "q" }]);
  assertEquals(interpret(s, { name: "enter" }).commands, [{ type: "send" }]);
  assertEquals(interpret(s, { name: "ctrl-c" }).commands, [{ type: "quit" }]);
});

Deno.test("wrap breaks long words and keeps every line within the width", () => {
  for (const l of wrap("a ".repeat(50) + "x".repeat(95) + "\nshort", 20)) assert(l.length <= 20, l);
});

Deno.test("the models tab shows deploy progress per node from transfer events", () => {
  let s = busyState(2);
  s = reduce(s, { type: "tab", delta: 2 });
  const f = render(s, { width: 80, height: 24, now: 0, glitch: "off" });
  const text = f.screen.lines().join("\n");
  assert(text.includes("TRANSFERS"), text);
  assert(/node-0-wi.*fetching.*31% 88\.0 MB\/s eta 4s/.test(text), text);
  assert(text.includes("failed"), text);
  assert(
    s.events.some((e) => e.kind === "transfer" && e.level === "bad"),
    "a failed transfer is an event",
  );
});

Deno.test("text takes one column per character: emoji are '?', zero-width characters dropped", () => {
  // Before, ✅ ⚡ ⌛ ☔ ❌ (drawn two wide) and ZWJ, U+20DD, a soft hyphen (drawn zero wide)
  // passed through, and model output pushed the right border.
  assertEquals(sanitize("⚡⌛☔✅❌ a\u200db e\u0301\u20dd x\u00ady"), "????? ab e xy");
  assertEquals(sanitize("中 😀 ok\tend"), "? ? ok end");
});

Deno.test("no agent yet: the link error is shown whole, wrapped, and its advice once", () => {
  const error = "no agent at 127.0.0.1:1 — start one with `deno task agent`, or point llmctl at " +
    "one with --endpoint host:port (or DLLM_ENDPOINT)";
  const s = reduce(initialState("127.0.0.1:1"), { type: "disconnected", at: 1, error });
  const f = render(s, { width: 80, height: 24, now: 0, glitch: "off" });
  const text = f.screen.lines().join("\n");
  // Before, the line was cut at the width ("…or point llmctl") and the advice printed again.
  assert(text.replace(/[\s│]+/g, " ").includes("(or DLLM_ENDPOINT)"), text);
  assertEquals(text.split("deno task agent").length - 1, 1, text);
});

Deno.test("reducer: a relink rebuilds the view from its snapshot and does not log the replayed history again", () => {
  // Before, a relink kept every member (b dead, forgotten by the agent since: "1/2 alive" for
  // good) and logged the agent's history a second time.
  let s = initialState("e");
  s = reduce(s, { type: "connected", at: 1 });
  const history = [member("a", NodeState.ALIVE, 0, 2), member("b", NodeState.ALIVE, 2, 5)];
  for (const m of history) s = reduce(s, { type: "update", msg: m });
  s = reduce(s, { type: "update", msg: member("b", NodeState.DEAD, 2, 5) });
  s = reduce(s, { type: "disconnected", at: 2, error: "the agent ended the stream" });
  const logged = s.events.length;
  s = reduce(s, { type: "connected", at: 3 });
  // the agent replays its recent history (old stamps), then its snapshot: only a is a member now
  for (const m of history) s = reduce(s, { type: "update", msg: m });
  assertEquals(Object.keys(s.nodes).sort(), ["a", "b"]);
  assertEquals(s.events.length, logged + 1, "only the link line: the history is not logged again");
  s = reduce(s, { type: "connected", at: 4 });
  s = reduce(s, { type: "update", msg: member("a", NodeState.ALIVE, 0, 5) });
  assertEquals(Object.keys(s.nodes), ["a"], "members come from the snapshot, not the old view");
});
