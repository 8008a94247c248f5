/**
 * The TUI as a program: the terminal (raw mode, alternate screen, restored on every way out),
 * the update stream (ClusterService.StreamUpdates with a snapshot, re-dialled when it breaks),
 * keys, prompts sent to InferenceService.Generate, and the render loop. State lives in the
 * reducer (state.ts), drawing in layout.ts, glitches in effects.ts; this file only wires them.
 *
 * @module
 */
import { type AgentConnection, rpcError } from "../client.ts";
import { FinishReason, NodeState } from "../../proto/mod.ts";
import { GlitchEngine } from "./effects.ts";
import { type Command, interpret, parseKeys } from "./keys.ts";
import { render } from "./layout.ts";
import { toAnsi } from "./screen.ts";
import { type Action, initialState, reduce, type TuiState } from "./state.ts";

/** Options of {@linkcode runTui}. */
export interface TuiOptions {
  /** Glitch effects on at start (never with colors off). */
  glitch: boolean;
  /** ANSI colors (off under NO_COLOR). */
  color: boolean;
  /** Show the boot sequence. */
  boot: boolean;
  /** Tokens per prompt on the Inference tab. */
  maxTokens?: number;
}

const BOOT_MS = 1400;
const FRAME_MS = 50;

/** Run the TUI on this terminal until the user quits. */
export async function runTui(agent: AgentConnection, opts: TuiOptions): Promise<void> {
  const enc = new TextEncoder();
  const write = (s: string) => {
    const data = enc.encode(s);
    let off = 0;
    while (off < data.length) off += Deno.stdout.writeSync(data.subarray(off));
  };
  let state: TuiState = initialState(agent.endpoint);
  const fx = new GlitchEngine({ enabled: opts.glitch && opts.color });
  let booting = opts.boot;
  const bootStart = Date.now();
  let size = Deno.consoleSize();
  let dirty = true;
  let lastDraw = 0;
  let quit!: () => void;
  const quitting = new Promise<void>((r) => (quit = r));
  const streamAbort = new AbortController();
  let generation: AbortController | undefined;

  const dispatch = (a: Action) => {
    const before = state;
    state = reduce(state, a);
    if (a.type === "update" && a.msg.event.case === "membership") {
      const id = a.msg.event.value.node?.id ?? "";
      const was = before.nodes[id]?.state;
      const now = state.nodes[id]?.state;
      if (was !== undefined && was !== now) {
        if (now === NodeState.SUSPECT) fx.nodeChanged(id, "suspect", Date.now());
        else if (now === NodeState.DEAD) fx.nodeChanged(id, "dead", Date.now());
        else if (now === NodeState.ALIVE) fx.nodeChanged(id, "alive", Date.now());
      }
    }
    dirty = true;
  };

  const draw = () => {
    const now = Date.now();
    const boot = booting ? Math.min(1, (now - bootStart) / BOOT_MS) : undefined;
    if (booting && now - bootStart > BOOT_MS + 400) booting = false;
    const frame = render(state, {
      width: size.columns,
      height: size.rows,
      now,
      glitch: fx.enabled ? String(fx.intensity) : "off",
      boot,
    });
    const shown = fx.apply(frame.screen, frame.regions, now);
    write(toAnsi(shown, opts.color));
    dirty = false;
    lastDraw = now;
  };

  const send = async () => {
    const requestId = crypto.randomUUID();
    generation = new AbortController();
    dispatch({ type: "inferStart", requestId, at: Date.now() });
    let stages: { node: string; from: number; to: number }[] | undefined;
    try {
      for await (
        const m of agent.inference.generate({
          prompt: state.inference.prompt,
          maxTokens: opts.maxTokens ?? 128,
          requestId,
        }, { signal: generation.signal })
      ) {
        if (m.placement) {
          stages = m.placement.stages.map((s) => ({
            node: s.nodeId,
            from: s.fromLayer,
            to: s.toLayer,
          }));
        }
        if (m.finishReason) {
          const why = m.finishReason === FinishReason.LENGTH
            ? "max tokens"
            : m.finishReason === FinishReason.CANCELLED
            ? "cancelled"
            : "end of text";
          if (m.text) dispatch({ type: "inferToken", text: m.text, at: Date.now(), stages });
          dispatch({
            type: "inferDone",
            at: Date.now(),
            tps: m.usage?.decodeTokensPerSecond ?? 0,
            ttftMs: m.usage?.timeToFirstTokenMs ?? 0,
            status: `done (${why}): ${m.usage?.completionTokens ?? 0} tokens` +
              (m.usage?.recoveries ? `, ${m.usage.recoveries} recoveries` : ""),
          });
        } else {
          dispatch({ type: "inferToken", text: m.text, at: Date.now(), stages });
        }
      }
    } catch (e) {
      if (!generation.signal.aborted) {
        dispatch({ type: "inferError", error: rpcError(e, agent.endpoint, agent.tls).message });
      }
    } finally {
      if (state.inference.running) {
        dispatch({ type: "inferDone", at: Date.now(), tps: 0, ttftMs: 0, status: "stopped" });
      }
    }
  };

  const run = (c: Command) => {
    switch (c.type) {
      case "quit":
        quit();
        break;
      case "send":
        send();
        break;
      case "glitchToggle":
        fx.enabled = opts.color && !fx.enabled;
        break;
      case "glitchLevel":
        fx.intensity = c.level;
        fx.fire("flicker", "", Date.now(), 120);
        break;
      case "glitchBurst":
        fx.burst(Date.now());
        break;
    }
    dirty = true;
  };

  const streamLoop = async () => {
    while (!streamAbort.signal.aborted) {
      let first = true;
      try {
        for await (
          const msg of agent.cluster.streamUpdates(
            { includeSnapshot: true },
            { signal: streamAbort.signal },
          )
        ) {
          if (first) {
            dispatch({ type: "connected", at: Date.now() });
            first = false;
          }
          dispatch({ type: "update", msg });
        }
        if (!streamAbort.signal.aborted) {
          dispatch({ type: "disconnected", at: Date.now(), error: "the agent ended the stream" });
        }
      } catch (e) {
        if (streamAbort.signal.aborted) return;
        dispatch({
          type: "disconnected",
          at: Date.now(),
          error: rpcError(e, agent.endpoint, agent.tls).message,
        });
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  };

  const inputLoop = async (reader: ReadableStreamDefaultReader<Uint8Array>) => {
    const dec = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        quit();
        return;
      }
      for (const key of parseKeys(dec.decode(value, { stream: true }))) {
        if (booting) {
          booting = false;
          dirty = true;
          if (!("name" in key && key.name === "ctrl-c") && !("char" in key && key.char === "q")) {
            continue;
          }
        }
        const { actions, commands } = interpret(state, key);
        for (const a of actions) dispatch(a);
        for (const c of commands) run(c);
      }
    }
  };

  const onResize = () => {
    size = Deno.consoleSize();
    write("\x1b[2J");
    dirty = true;
  };
  const onTerm = () => quit();
  Deno.stdin.setRaw(true);
  write("\x1b[?1049h\x1b[?25l\x1b[2J");
  Deno.addSignalListener("SIGWINCH", onResize);
  Deno.addSignalListener("SIGTERM", onTerm);
  const reader = Deno.stdin.readable.getReader();
  const timer = setInterval(() => {
    const now = Date.now();
    if (
      dirty || fx.busy || booting || state.inference.running || state.inference.editing ||
      now - lastDraw >= 1000
    ) draw();
  }, FRAME_MS);
  try {
    streamLoop();
    inputLoop(reader).catch(() => quit());
    draw();
    await quitting;
  } finally {
    clearInterval(timer);
    streamAbort.abort();
    generation?.abort();
    Deno.removeSignalListener("SIGWINCH", onResize);
    Deno.removeSignalListener("SIGTERM", onTerm);
    write("\x1b[0m\x1b[2J\x1b[H\x1b[?25h\x1b[?1049l");
    try {
      Deno.stdin.setRaw(false);
    } catch { /* stdin already gone */ }
    reader.releaseLock();
  }
}
