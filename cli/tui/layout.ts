/**
 * Layout: draw a {@linkcode TuiState} into a {@linkcode Screen} of any size (80×24 and up) and
 * report where things landed (node boxes, rows) so effects can aim at them. Pure: the same
 * state and size always give the same screen.
 *
 * @module
 */
import { ModelId } from "../../cluster/model_id.ts";
import { NodeState, TransferState } from "../../proto/mod.ts";
import { type Rect, Screen, type Style } from "./screen.ts";
import { stateWord, TABS, type TuiState, visibleEvents, visibleNodes } from "./state.ts";

/** Smallest usable terminal. */
export const MIN_WIDTH = 80;
/** Smallest usable terminal. */
export const MIN_HEIGHT = 24;

/** What else the frame shows that is not cluster state. */
export interface FrameInfo {
  width: number;
  height: number;
  /** Unix ms (the clock in the title bar, ages of events). */
  now: number;
  /** Glitch status for the status bar: "off" or the intensity 1–5. */
  glitch: string;
  /** Boot progress 0..1, or undefined when booted. */
  boot?: number;
}

/** A rendered frame: the grid, and named regions ("node:<id>", "content", "row:<id>"). */
export interface Frame {
  screen: Screen;
  regions: Record<string, Rect>;
}

const SPARK = "▁▂▃▄▅▆▇█";

/** A sparkline of the last `width` values. */
export function sparkline(values: number[], width: number): string {
  const v = values.slice(-width);
  const max = Math.max(...v, 1e-9);
  return v.map((x) => (x <= 0 ? " " : SPARK[Math.min(7, Math.floor((x / max) * 7.999))]))
    .join("").padStart(width);
}

/** A bar of `width` cells with [from, to) of `total` filled. */
export function rangeBar(from: number, to: number, total: number, width: number): string {
  if (total <= 0 || width <= 0) return "·".repeat(Math.max(0, width));
  const a = Math.min(width, Math.round((from / total) * width));
  const b = Math.min(width, Math.max(a + (to > from ? 1 : 0), Math.round((to / total) * width)));
  return "·".repeat(a) + "█".repeat(b - a) + "·".repeat(width - b);
}

function stateStyle(s: NodeState): Style {
  return s === NodeState.ALIVE
    ? "ok"
    : s === NodeState.SUSPECT
    ? "warn"
    : s === NodeState.DEAD
    ? "bad"
    : "dim";
}

function bytes(n: number | undefined): string {
  if (n === undefined) return "—";
  const u = ["B", "k", "M", "G", "T"];
  let i = 0;
  while (n >= 1000 && i < u.length - 1) {
    n /= 1000;
    i++;
  }
  return `${n.toFixed(n < 10 && i > 0 ? 1 : 0)}${u[i]}`;
}

/** "1.5MB", "0B". */
function bytesB(n: number | undefined): string {
  return bytes(n).replace(/([kMGT])$/, "$1B");
}

function clock(ms: number): string {
  const d = new Date(ms);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((x) => String(x).padStart(2, "0"))
    .join(":");
}

/** Wrap text into lines of at most `w` columns (hard breaks on newlines). */
export function wrap(text: string, w: number): string[] {
  const out: string[] = [];
  for (const para of text.split("\n")) {
    let line = "";
    for (const word of para.split(/(\s+)/)) {
      if (word === "") continue;
      if ([...line].length + [...word].length <= w) {
        line += word;
        continue;
      }
      if (line.trim()) out.push(line);
      line = word.trimStart();
      while ([...line].length > w) {
        out.push([...line].slice(0, w).join(""));
        line = [...line].slice(w).join("");
      }
    }
    out.push(line);
  }
  return out;
}

/** Draw one frame. */
export function render(state: TuiState, info: FrameInfo): Frame {
  const screen = new Screen(info.width, info.height);
  const regions: Record<string, Rect> = {};
  const { width: W, height: H } = info;
  if (W < MIN_WIDTH || H < MIN_HEIGHT) {
    screen.text(0, 0, `terminal ${W}×${H} is too small;`, "warn");
    screen.text(0, 1, `llmctl tui needs ${MIN_WIDTH}×${MIN_HEIGHT}`, "warn");
    screen.text(0, 2, "(q quits)", "dim");
    return { screen, regions };
  }
  if (info.boot !== undefined) {
    drawBoot(screen, state, info);
    return { screen, regions };
  }
  // Title bar.
  screen.fill({ x: 0, y: 0, w: W, h: 1 }, " ", "inv");
  screen.text(1, 0, "▓▒░ DISTRIBUTED-LLM ░▒▓", "inv");
  const link = state.connected ? `● LINK ${state.endpoint}` : `○ NO LINK ${state.endpoint}`;
  const right = `${link}  ${clock(info.now)} `;
  screen.text(W - right.length, 0, right, "inv");
  // Tabs.
  let x = 1;
  TABS.forEach((t, i) => {
    const label = i === state.tab ? `[${t}]` : ` ${t} `;
    x += screen.text(x, 1, label, i === state.tab ? "bright" : "dim") + 1;
  });
  const content: Rect = { x: 0, y: 2, w: W, h: H - 3 };
  regions.content = content;
  const titles = ["TOPOLOGY", "NODES", "MODELS", "INFERENCE", "EVENTS"];
  const alive = Object.values(state.nodes).filter((n) => n.state === NodeState.ALIVE).length;
  screen.box(
    content,
    titles[state.tab],
    "normal",
    `${alive}/${Object.keys(state.nodes).length} alive`,
  );
  const inner: Rect = { x: 2, y: 3, w: W - 4, h: H - 5 };
  if (!state.connected && Object.keys(state.nodes).length === 0) {
    screen.text(inner.x, inner.y, `waiting for the agent at ${state.endpoint}…`, "warn");
    // The error in full (it was cut at the width, mid-sentence), and the advice only where the
    // error does not give it already ("no agent at … — start one with …").
    const error = state.linkError ? wrap(state.linkError, inner.w).slice(0, 4) : [];
    error.forEach((line, i) => screen.text(inner.x, inner.y + 1 + i, line, "bad", inner.w));
    if (!state.linkError.includes("deno task agent")) {
      screen.text(
        inner.x,
        inner.y + 2 + error.length,
        "start one with `deno task agent`, or pass --endpoint host:port",
        "dim",
        inner.w,
      );
    }
  } else {
    [drawCluster, drawNodes, drawModels, drawInference, drawEvents][state.tab](
      screen,
      inner,
      state,
      regions,
      info,
    );
  }
  // Status bar.
  const y = H - 1;
  if (state.filtering || state.filter) {
    screen.text(0, y, `/${state.filter}${state.filtering ? "█" : ""}`, "bright", W);
    screen.text(Math.min(W - 24, 2 + state.filter.length + 2), y, "enter keep · esc clear", "dim");
  } else {
    const keys = state.tab === 3 && state.inference.editing
      ? "type the prompt · enter send · esc done"
      : "tab switch · ↑↓ select · / filter · ? help · q quit";
    screen.text(0, y, keys, "dim", W);
  }
  const st = `glitch ${info.glitch}`;
  screen.text(W - st.length - 1, y, st, "dim");
  if (state.help) drawHelp(screen);
  return { screen, regions };
}

function drawBoot(screen: Screen, state: TuiState, info: FrameInfo) {
  const lines = [
    "DISTRIBUTED-LLM OPERATOR TERMINAL",
    "(C) THE DISTRIBUTED-LLM AUTHORS",
    "",
    "PHOSPHOR ........................ WARM",
    "MEMORY CHECK .................... OK",
    `LINK ${state.endpoint} ${".".repeat(Math.max(3, 27 - state.endpoint.length))} ${
      state.connected ? "OK" : "DIALING"
    }`,
    "GOSSIP DECODER .................. OK",
    "PIPELINE MONITOR ................ OK",
    "",
    "READY_",
  ];
  const chars = lines.join("\n").length;
  let budget = Math.floor((info.boot ?? 1) * chars);
  const top = Math.max(1, Math.floor((info.height - lines.length) / 2) - 1);
  const left = Math.max(2, Math.floor((info.width - 38) / 2));
  lines.forEach((l, i) => {
    if (budget <= 0) return;
    const shown = l.slice(0, budget);
    budget -= l.length + 1;
    screen.text(left, top + i, shown, i === 0 ? "bright" : "normal", info.width - left);
  });
}

function drawHelp(screen: Screen) {
  const lines = [
    "tab / shift-tab   switch tabs",
    "↑ ↓  j k          select a row",
    "enter             expand node / edit + send prompt",
    "esc               stop editing, clear filter",
    "/                 filter nodes and events",
    "g                 glitch effects on/off",
    "1 – 5             glitch intensity",
    "G                 fire a glitch",
    "?                 this help",
    "q  Ctrl-C         quit",
  ];
  const w = 54;
  const h = lines.length + 2;
  const r = {
    x: Math.floor((screen.width - w) / 2),
    y: Math.floor((screen.height - h) / 2),
    w,
    h,
  };
  screen.fill(r);
  screen.box(r, "HELP", "bright", "? closes");
  lines.forEach((l, i) => screen.text(r.x + 2, r.y + 1 + i, l, "normal", w - 4));
}

type Drawer = (
  screen: Screen,
  r: Rect,
  s: TuiState,
  regions: Record<string, Rect>,
  info: FrameInfo,
) => void;

function modelLine(s: TuiState): string {
  const p = s.placement;
  if (!p) return s.placementNote || "no model placed yet";
  const placed = Object.values(s.nodes).filter((n) =>
    n.state === NodeState.ALIVE && n.hosted?.model === p.model
  ).reduce((a, n) => a + (n.hosted!.to - n.hosted!.from), 0);
  // The file name: the id's size and fingerprint would push the state off an 80-column line.
  return `model ${ModelId.parse(p.model).name}  ${p.total} layers  epoch ${p.epoch}  ` +
    (placed >= p.total ? "READY" : `${placed}/${p.total} placed`);
}

const drawCluster: Drawer = (screen, r, s, regions) => {
  screen.text(r.x, r.y, modelLine(s), s.placement ? "bright" : "warn", r.w);
  const nodes = visibleNodes(s);
  const boxW = Math.max(26, Math.min(40, Math.floor(r.w / Math.max(1, Math.min(nodes.length, 4)))));
  const cols = Math.max(1, Math.floor(r.w / boxW));
  const boxH = 6;
  const rows = Math.max(1, Math.floor((r.h - 3) / boxH));
  const total = s.placement?.total ?? Math.max(1, ...nodes.map((n) => n.hosted?.to ?? 0));
  const shown = nodes.slice(0, cols * rows);
  shown.forEach((n, i) => {
    const box: Rect = {
      x: r.x + (i % cols) * boxW,
      y: r.y + 1 + Math.floor(i / cols) * boxH,
      w: boxW - 1,
      h: boxH,
    };
    regions[`node:${n.id}`] = box;
    const st = stateStyle(n.state);
    const sel = i === Math.min(s.selected, shown.length - 1);
    screen.box(box, n.id, sel ? "bright" : st, stateWord(n.state).toUpperCase(), st);
    const w = box.w - 4;
    screen.text(box.x + 2, box.y + 1, `${n.backend} · ${n.gflops.toFixed(2)} GFLOP/s`, "normal", w);
    screen.text(
      box.x + 2,
      box.y + 2,
      n.hosted
        ? `layers [${n.hosted.from},${n.hosted.to}) of ${total}${n.drained ? " drained" : ""}`
        : n.drained
        ? "drained: no layers"
        : "no layers",
      n.hosted ? "normal" : "dim",
      w,
    );
    screen.text(
      box.x + 2,
      box.y + 3,
      n.hosted ? rangeBar(n.hosted.from, n.hosted.to, total, w) : rangeBar(0, 0, total, w),
      n.state === NodeState.ALIVE ? "bright" : st,
      w,
    );
    screen.text(
      box.x + 2,
      box.y + 4,
      `cpu ${
        n.cpu === undefined || n.state !== NodeState.ALIVE ? "—" : `${n.cpu.toFixed(0)}%`
      }  budget ${bytesB(n.budget)}`,
      "dim",
      w,
    );
  });
  const more = nodes.length - shown.length;
  const y = r.y + 1 + Math.ceil(shown.length / cols) * boxH;
  if (more > 0) screen.text(r.x, y, `+${more} more (see NODES)`, "dim");
  // One line per pipeline: several with --replicas (each request runs on one of them).
  const pipelines = s.placement
    ? (s.placement.replicas?.length ?? 0) > 1
      ? s.placement.replicas!.map((rep) => ({ label: `replica ${rep.id}`, stages: rep.stages }))
      : [{ label: "pipeline", stages: s.placement.stages }]
    : [];
  const lines = Math.max(1, Math.min(pipelines.length, r.y + r.h - y - 4));
  pipelines.slice(0, lines).forEach((pl, i) => {
    if (y + 1 + i >= r.y + r.h) return;
    const chain = pl.stages.map((st) => `${st.nodeId}[${st.fromLayer},${st.toLayer})`)
      .join(" ━▶ ");
    screen.text(r.x, y + i + (more > 0 ? 1 : 0), `${pl.label}: ${chain} ━▶ sample`, "normal", r.w);
  });
  // What just happened, under the boxes.
  const top = y + 1 + lines + (more > 0 ? 1 : 0);
  const room = r.y + r.h - top;
  if (room >= 3) {
    const box: Rect = { x: r.x, y: top, w: r.w, h: room };
    screen.box(box, "RECENT", "dim");
    const recent = s.events.slice(-(room - 2));
    recent.forEach((e, i) => {
      screen.text(box.x + 2, box.y + 1 + i, clock(e.t), "dim");
      screen.text(box.x + 11, box.y + 1 + i, e.text, levelStyle(e.level), box.w - 13);
    });
  }
};

function levelStyle(level: string): Style {
  return level === "bad" ? "bad" : level === "warn" ? "warn" : level === "ok" ? "ok" : "normal";
}

const drawNodes: Drawer = (screen, r, s, regions) => {
  const nodes = visibleNodes(s);
  const spark = r.w >= 120 ? 24 : 8;
  const cols = [
    { h: "ID", w: r.w >= 120 ? 16 : 9 },
    { h: "STATE", w: 7 },
    { h: "CPU", w: 4 },
    { h: "MEM FREE", w: 9 },
    { h: "BACKEND", w: 0 },
    { h: "LAYERS", w: 7 },
    { h: "TOK/S", w: spark + 5 },
    { h: "SESS", w: 4 },
  ];
  const fixed = cols.reduce((a, c) => a + c.w, 0) + cols.length - 1;
  cols[4].w = Math.max(6, r.w - fixed);
  const cell = (x: number, y: number, text: string, style: Style, w: number) =>
    screen.text(x, y, text, style, Math.max(0, Math.min(w, r.x + r.w - x)));
  let x = r.x;
  for (const c of cols) {
    cell(x, r.y, c.h, "bright", c.w);
    x += c.w + 1;
  }
  const sel = Math.min(s.selected, Math.max(0, nodes.length - 1));
  const detailH = s.expanded ? 7 : 0;
  const visible = Math.max(1, r.h - 1 - detailH);
  const start = Math.max(0, sel - visible + 1);
  nodes.slice(start, start + visible).forEach((n, i) => {
    const y = r.y + 1 + i;
    const isSel = start + i === sel;
    regions[`row:${n.id}`] = { x: r.x, y, w: r.w, h: 1 };
    // A departed node's last sample is history, not load.
    const gone = n.state === NodeState.DEAD || n.state === NodeState.LEFT;
    const cells = [
      (isSel ? "▶" : " ") + n.id,
      stateWord(n.state),
      n.cpu === undefined || gone ? "—" : `${n.cpu.toFixed(0)}%`,
      n.memAvail === undefined || gone ? "—" : `${bytes(n.memAvail)}/${bytes(n.memTotal)}`,
      `${n.backend} ${n.adapter}`,
      n.hosted ? `[${n.hosted.from},${n.hosted.to})` : "—",
      `${sparkline(n.tps, spark)} ${(n.tps.at(-1) ?? 0).toFixed(0).padStart(4)}`,
      n.sessions === undefined ? "—" : String(n.sessions),
    ];
    let cx = r.x;
    cells.forEach((c, j) => {
      const style: Style = j === 1 ? stateStyle(n.state) : isSel ? "bright" : "normal";
      cell(cx, y, c, style, cols[j].w);
      cx += cols[j].w + 1;
    });
  });
  if (nodes.length === 0) screen.text(r.x, r.y + 1, "no nodes match", "dim");
  if (s.expanded && nodes[sel]) {
    const n = nodes[sel];
    const box: Rect = { x: r.x, y: r.y + r.h - detailH, w: r.w, h: detailH };
    screen.box(
      box,
      `NODE ${n.id}`,
      "bright",
      stateWord(n.state).toUpperCase(),
      stateStyle(n.state),
    );
    const lines = [
      `endpoint ${n.endpoint}   version ${n.version}   budget ${bytesB(n.budget)}`,
      `backend ${n.backend} — ${n.adapter}`,
      `calibration ${n.gflops.toFixed(2)} GFLOP/s   layers ${
        n.hosted ? `[${n.hosted.from},${n.hosted.to}) of ${n.hosted.model}` : "none"
      }`,
      `cpu ${n.cpu?.toFixed(1) ?? "—"}%   rss ${bytesB(n.rss)}   sessions ${n.sessions ?? "—"}` +
      `   state since ${clock(n.changedAt)}`,
      n.cpu === undefined ? "(no load sample from this node yet)" : "",
    ];
    lines.forEach((l, i) => screen.text(box.x + 2, box.y + 1 + i, l, "normal", box.w - 4));
  }
};

const drawModels: Drawer = (screen, r, s) => {
  const p = s.placement;
  if (!p) {
    screen.text(r.x, r.y, modelLine(s), "warn", r.w);
  } else {
    screen.text(r.x, r.y, modelLine(s), "bright", r.w);
    const barW = Math.max(10, r.w - 28);
    screen.text(r.x, r.y + 2, "STAGE NODE      LAYERS", "bright");
    p.stages.forEach((st, i) => {
      const n = s.nodes[st.nodeId];
      const style = n ? stateStyle(n.state) : "dim";
      const y = r.y + 3 + i;
      if (y >= r.y + r.h - 3) return;
      screen.text(r.x, y, `${String(i).padEnd(5)} ${st.nodeId.padEnd(9).slice(0, 9)} `, style);
      screen.text(r.x + 16, y, `[${st.fromLayer},${st.toLayer})`.padEnd(10), "normal");
      screen.text(r.x + 27, y, rangeBar(st.fromLayer, st.toLayer, p.total, barW), style, barW);
    });
  }
  // Deploy progress per node (llmctl models deploy), newest state of each.
  const transfers = Object.entries(s.transfers).sort(([a], [b]) => (a < b ? -1 : 1));
  const rows = Math.max(0, Math.min(transfers.length, Math.floor(r.h / 2) - 1));
  if (rows === 0) {
    screen.text(r.x, r.y + r.h - 1, "deploy with: llmctl models deploy <file.gguf>", "dim", r.w);
    return;
  }
  const top = r.y + r.h - rows - 1;
  screen.text(r.x, top, "TRANSFERS (llmctl models deploy)", "bright", r.w);
  const barW = Math.max(8, r.w - 44);
  transfers.slice(0, rows).forEach(([node, t], i) => {
    const y = top + 1 + i;
    const frac = t.total > 0 ? Math.min(1, t.done / t.total) : 0;
    const fill = Math.round(frac * barW);
    const word = (TransferState[t.state] ?? "?").toLowerCase().slice(0, 8);
    const style: Style = t.state === TransferState.FAILED
      ? "bad"
      : t.state === TransferState.FETCHING
      ? "warn"
      : "ok";
    screen.text(r.x, y, `${node.padEnd(9).slice(0, 9)} ${word.padEnd(8)} `, style);
    screen.text(r.x + 19, y, "█".repeat(fill) + "·".repeat(barW - fill), style, barW);
    const moving = t.state === TransferState.FETCHING;
    const rate = moving && t.rate > 0 ? `${(t.rate / 1e6).toFixed(1)} MB/s` : "";
    const eta = moving && t.eta > 0 ? ` eta ${Math.ceil(t.eta)}s` : "";
    screen.text(
      r.x + 20 + barW,
      y,
      `${(frac * 100).toFixed(0).padStart(3)}% ${rate}${eta}`,
      "normal",
      r.w - 20 - barW,
    );
  });
};

const drawInference: Drawer = (screen, r, s, regions, info) => {
  const inf = s.inference;
  const promptBox: Rect = { x: r.x, y: r.y, w: r.w, h: 4 };
  regions.prompt = promptBox;
  screen.box(
    promptBox,
    "PROMPT",
    inf.editing ? "bright" : "normal",
    inf.editing ? "editing · enter sends" : "enter edits",
  );
  const pl = wrap(
    inf.prompt + (inf.editing && Math.floor(info.now / 500) % 2 === 0 ? "█" : ""),
    r.w - 4,
  );
  pl.slice(-2).forEach((l, i) => screen.text(r.x + 2, r.y + 1 + i, l, "bright", r.w - 4));
  const stats = `${inf.running ? "● STREAMING" : "○ IDLE"}  ${inf.tokens} tok  ` +
    `${inf.tps.toFixed(1)} tok/s  ttft ${inf.ttftMs ? `${inf.ttftMs.toFixed(0)} ms` : "—"}`;
  screen.text(r.x, r.y + 4, stats, inf.running ? "ok" : "dim", r.w);
  // The pipeline: which stages serve the request; lit while it streams.
  const stages = inf.stages.length ? inf.stages : (s.placement?.stages ?? []).map((st) => ({
    node: st.nodeId,
    from: st.fromLayer,
    to: st.toLayer,
  }));
  let x = r.x;
  screen.text(x, r.y + 5, "stages ", "dim");
  x += 7;
  stages.forEach((st, i) => {
    const n = s.nodes[st.node];
    const dead = n && n.state !== NodeState.ALIVE;
    // Lit while frames flow through the stage (its latest load sample counted some).
    const active = inf.running && (n?.fps ?? 0) > 0;
    const label = `${st.node}[${st.from},${st.to})` + (n?.fps ? ` ${n.fps.toFixed(0)}f/s` : "");
    x += screen.text(x, r.y + 5, label, dead ? "bad" : active ? "inv" : "normal", r.x + r.w - x);
    if (i < stages.length - 1) x += screen.text(x, r.y + 5, " ━▶ ", "dim", r.x + r.w - x);
  });
  screen.text(r.x, r.y + 6, inf.status, inf.status.startsWith("error") ? "bad" : "dim", r.w);
  const out: Rect = { x: r.x, y: r.y + 7, w: r.w, h: r.h - 7 };
  regions.output = out;
  screen.box(out, "OUTPUT", "normal");
  const lines = wrap(inf.prompt && inf.output ? inf.output : inf.output, out.w - 4);
  lines.slice(-(out.h - 2)).forEach((l, i) =>
    screen.text(out.x + 2, out.y + 1 + i, l, "bright", out.w - 4)
  );
};

const drawEvents: Drawer = (screen, r, s, _regions, info) => {
  const events = visibleEvents(s);
  const h = r.h;
  const offset = Math.min(s.selected, Math.max(0, events.length - h));
  const end = events.length - offset;
  const shown = events.slice(Math.max(0, end - h), end);
  shown.forEach((e, i) => {
    const style: Style = e.level === "bad"
      ? "bad"
      : e.level === "warn"
      ? "warn"
      : e.level === "ok"
      ? "ok"
      : "normal";
    screen.text(r.x, r.y + i, clock(e.t), "dim");
    screen.text(r.x + 9, r.y + i, e.kind.toUpperCase().padEnd(9), "dim");
    screen.text(r.x + 19, r.y + i, e.text, style, r.w - 19);
  });
  if (events.length === 0) screen.text(r.x, r.y, "no events yet", "dim");
  if (offset > 0) {
    screen.text(r.x + r.w - 14, r.y + h - 1, `↓ ${offset} newer`, "dim");
  }
  void info;
};
