/**
 * The TUI's state and the reducer over it: cluster facts folded from the StreamUpdates events,
 * plus what the user is doing (tab, selection, filter, prompt). Pure: no I/O, no clock reads
 * (actions carry their time), so tests can replay a stream and check the state.
 *
 * @module
 */
import {
  type NodeInfo,
  NodeState,
  type Placement,
  RequestPhase,
  type StreamUpdatesResponse,
  TransferState,
} from "../../proto/mod.ts";
import { joinHostPort } from "../../cluster/gossip/mod.ts";

/** The tabs, in order. */
export const TABS = ["CLUSTER", "NODES", "MODELS", "INFERENCE", "EVENTS"] as const;

/** Samples kept per sparkline. */
export const SPARK_SAMPLES = 40;

/** One node as the TUI shows it. */
export interface NodeView {
  id: string;
  state: NodeState;
  previous: NodeState;
  /** When the state last changed (Unix ms, from the event). */
  changedAt: number;
  endpoint: string;
  backend: string;
  adapter: string;
  gflops: number;
  budget: number;
  version: string;
  hosted?: { model: string; from: number; to: number };
  /** Drained: its layers moved elsewhere until the model is deployed again. */
  drained?: boolean;
  cpu?: number;
  memTotal?: number;
  memAvail?: number;
  rss?: number;
  sessions?: number;
  /** Tokens/s through the node (as head, or frames/s as a stage), oldest first, one per sample. */
  tps: number[];
  /** Activation frames per second in the latest sample. */
  fps: number;
  framesTotal?: number;
  framesAt?: number;
  /** Latest decode speed of requests this node heads. */
  headTps: number;
}

/** One line of the Events tab. */
export interface EventLine {
  t: number;
  kind: "member" | "placement" | "request" | "link" | "transfer";
  level: "info" | "ok" | "warn" | "bad";
  text: string;
}

/** One node's part of a model deploy, from TransferProgress events. */
export interface TransferView {
  model: string;
  state: TransferState;
  done: number;
  total: number;
  rate: number;
  eta: number;
  detail: string;
}

/** The Inference tab. */
export interface InferenceView {
  prompt: string;
  editing: boolean;
  running: boolean;
  output: string;
  requestId: string;
  tokens: number;
  tps: number;
  ttftMs: number;
  startedAt: number;
  stages: { node: string; from: number; to: number }[];
  status: string;
}

/** Everything the screen shows. */
export interface TuiState {
  endpoint: string;
  connected: boolean;
  linkError: string;
  nodes: Record<string, NodeView>;
  placement?: {
    model: string;
    total: number;
    epoch: number;
    stages: Placement["stages"];
    /** The disjoint pipelines (`--replicas`); one entry when not replicated. */
    replicas?: Placement["replicas"];
  };
  placementNote: string;
  /** Requests in flight: id → head, phase, tokens, speed. */
  requests: Record<string, { head: string; tokens: number; tps: number; phase: RequestPhase }>;
  events: EventLine[];
  /** Model transfers per node (deploys): state, bytes, rate, ETA. */
  transfers: Record<string, TransferView>;
  lastSequence: number;
  droppedEvents: number;
  /** Time of the newest update applied (what a relink's replayed history must not repeat). */
  seenUntil: number;
  /** Updates up to this time are the agent's history replayed on a relink: not logged again. */
  replayUntil: number;
  tab: number;
  selected: number;
  expanded: boolean;
  filter: string;
  filtering: boolean;
  help: boolean;
  inference: InferenceView;
}

/** What can happen. */
export type Action =
  | { type: "connected"; at: number }
  | { type: "disconnected"; at: number; error: string }
  | { type: "update"; msg: StreamUpdatesResponse }
  | { type: "tab"; delta: number }
  | { type: "select"; delta: number }
  | { type: "toggleExpand" }
  | { type: "help"; open?: boolean }
  | { type: "filterStart" }
  | { type: "filterInput"; text: string }
  | { type: "filterBackspace" }
  | { type: "filterEnd"; keep: boolean }
  | { type: "promptEdit"; editing: boolean }
  | { type: "promptInput"; text: string }
  | { type: "promptBackspace" }
  | { type: "inferStart"; requestId: string; at: number }
  | {
    type: "inferToken";
    text: string;
    at: number;
    stages?: { node: string; from: number; to: number }[];
  }
  | { type: "inferDone"; at: number; tps: number; ttftMs: number; status: string }
  | { type: "inferError"; error: string };

/** Most event lines kept. */
const MAX_EVENTS = 500;

/** The state before anything happened. */
export function initialState(endpoint: string): TuiState {
  return {
    endpoint,
    connected: false,
    linkError: "",
    nodes: {},
    placementNote: "",
    requests: {},
    events: [],
    transfers: {},
    lastSequence: 0,
    droppedEvents: 0,
    seenUntil: 0,
    replayUntil: 0,
    tab: 0,
    selected: 0,
    expanded: false,
    filter: "",
    filtering: false,
    help: false,
    inference: {
      prompt: "Once upon a time",
      editing: false,
      running: false,
      output: "",
      requestId: "",
      tokens: 0,
      tps: 0,
      ttftMs: 0,
      startedAt: 0,
      stages: [],
      status: "press enter to edit the prompt, enter again to send",
    },
  };
}

/** "alive", "suspect", "dead", "left" or "?". */
export function stateWord(s: NodeState): string {
  return s === NodeState.ALIVE
    ? "alive"
    : s === NodeState.SUSPECT
    ? "suspect"
    : s === NodeState.DEAD
    ? "dead"
    : s === NodeState.LEFT
    ? "left"
    : "?";
}

const PHASE_WORDS: Record<number, string> = {
  [RequestPhase.STARTED]: "started",
  [RequestPhase.FIRST_TOKEN]: "first token",
  [RequestPhase.RECOVERING]: "recovering",
  [RequestPhase.COMPLETED]: "completed",
  [RequestPhase.FAILED]: "failed",
  [RequestPhase.CANCELLED]: "cancelled",
  [RequestPhase.PROGRESS]: "progress",
};

/** Nodes in display order (by id), filtered by the filter text. */
export function visibleNodes(s: TuiState): NodeView[] {
  const f = s.filter.toLowerCase();
  return Object.values(s.nodes)
    .filter((n) => !f || n.id.toLowerCase().includes(f) || stateWord(n.state).includes(f))
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** Event lines filtered by the filter text. */
export function visibleEvents(s: TuiState): EventLine[] {
  const f = s.filter.toLowerCase();
  return f ? s.events.filter((e) => e.text.toLowerCase().includes(f)) : s.events;
}

function pushEvent(s: TuiState, e: EventLine): EventLine[] {
  // A relink replays the agent's recent history: its state is applied, its lines are not
  // logged a second time.
  if (e.kind !== "link" && e.t <= s.replayUntil) return s.events;
  const events = [...s.events, e];
  return events.length > MAX_EVENTS ? events.slice(events.length - MAX_EVENTS) : events;
}

function nodeFromInfo(n: NodeInfo, prev: NodeView | undefined, at: number): NodeView {
  const host = n.addresses[0] ?? "";
  return {
    id: n.id,
    state: n.state,
    previous: prev?.state ?? NodeState.UNSPECIFIED,
    changedAt: prev && prev.state === n.state ? prev.changedAt : at,
    endpoint: joinHostPort(host, n.rpcPort),
    backend: n.backend,
    adapter: n.adapter,
    gflops: n.calibrationGflops,
    budget: Number(n.resources?.memoryBudgetBytes ?? 0n),
    version: n.version,
    hosted: n.hosted
      ? { model: n.hosted.model, from: n.hosted.fromLayer, to: n.hosted.toLayer }
      : undefined,
    drained: n.drained,
    cpu: prev?.cpu,
    memTotal: prev?.memTotal,
    memAvail: prev?.memAvail,
    rss: prev?.rss,
    sessions: prev?.sessions,
    tps: prev?.tps ?? [],
    fps: prev?.fps ?? 0,
    framesTotal: prev?.framesTotal,
    framesAt: prev?.framesAt,
    headTps: prev?.headTps ?? 0,
  };
}

function applyUpdate(s: TuiState, msg: StreamUpdatesResponse): TuiState {
  const at = Number(msg.timestampUnixMs);
  const seq = Number(msg.sequence);
  const dropped = s.lastSequence && seq > s.lastSequence + 1 ? seq - s.lastSequence - 1 : 0;
  s = {
    ...s,
    lastSequence: seq < s.lastSequence ? seq : Math.max(seq, s.lastSequence),
    droppedEvents: s.droppedEvents + dropped,
    seenUntil: Math.max(s.seenUntil, at),
  };
  const ev = msg.event;
  switch (ev.case) {
    case "membership": {
      const info = ev.value.node;
      if (!info) return s;
      const prev = s.nodes[info.id];
      const node = nodeFromInfo(info, prev, at);
      const nodes = { ...s.nodes, [info.id]: node };
      const changed = !prev || prev.state !== node.state;
      if (!changed) return { ...s, nodes };
      const word = stateWord(node.state);
      const level = node.state === NodeState.DEAD
        ? "bad"
        : node.state === NodeState.SUSPECT
        ? "warn"
        : node.state === NodeState.ALIVE
        ? "ok"
        : "info";
      const text = prev
        ? `node ${info.id}: ${stateWord(prev.state)} → ${word}`
        : `node ${info.id} ${word} (${node.backend}${
          node.hosted ? `, layers [${node.hosted.from},${node.hosted.to})` : ""
        })`;
      return { ...s, nodes, events: pushEvent(s, { t: at, kind: "member", level, text }) };
    }
    case "placement": {
      const p = ev.value.placement;
      const placement = p
        ? {
          model: p.model,
          total: p.totalLayers,
          epoch: Number(p.epoch),
          stages: p.stages,
          replicas: p.replicas,
        }
        : undefined;
      const stagesText = p
        ? p.stages.map((st) => `${st.nodeId}[${st.fromLayer},${st.toLayer})`).join(" ")
        : "none";
      const level = p ? "info" : "bad";
      return {
        ...s,
        placement,
        placementNote: p ? "" : ev.value.reason,
        events: pushEvent(s, {
          t: at,
          kind: "placement",
          level,
          text: p ? `placement e${p.epoch}: ${stagesText} — ${ev.value.reason}` : ev.value.reason,
        }),
      };
    }
    case "request": {
      const r = ev.value;
      const requests = { ...s.requests };
      const done = r.phase === RequestPhase.COMPLETED || r.phase === RequestPhase.FAILED ||
        r.phase === RequestPhase.CANCELLED;
      if (done) delete requests[r.requestId];
      else {
        requests[r.requestId] = {
          head: r.headNodeId,
          tokens: r.completionTokens,
          tps: r.tokensPerSecond,
          phase: r.phase,
        };
      }
      let nodes = s.nodes;
      const head = nodes[r.headNodeId];
      if (head && (r.phase === RequestPhase.PROGRESS || r.phase === RequestPhase.COMPLETED)) {
        nodes = { ...nodes, [head.id]: { ...head, headTps: r.tokensPerSecond } };
      }
      let inference = s.inference;
      if (r.requestId === inference.requestId && r.phase === RequestPhase.RECOVERING) {
        inference = { ...inference, status: `recovering: ${r.detail}` };
      }
      // Progress is frequent: keep it out of the Events tab.
      if (r.phase === RequestPhase.PROGRESS || r.phase === RequestPhase.FIRST_TOKEN) {
        return { ...s, requests, nodes, inference };
      }
      const level = r.phase === RequestPhase.FAILED
        ? "bad"
        : r.phase === RequestPhase.RECOVERING
        ? "warn"
        : "info";
      const text =
        `request ${r.requestId.slice(0, 8)} ${PHASE_WORDS[r.phase] ?? "?"} on ${r.headNodeId}` +
        (done ? `: ${r.completionTokens} tokens` : "") +
        (r.tokensPerSecond ? `, ${r.tokensPerSecond.toFixed(1)} tok/s` : "") +
        (r.detail ? ` — ${r.detail}` : "");
      return {
        ...s,
        requests,
        nodes,
        inference,
        events: pushEvent(s, { t: at, kind: "request", level, text }),
      };
    }
    case "metrics": {
      const m = ev.value;
      const n = s.nodes[m.nodeId];
      if (!n) return s;
      // Frames a stage processed per second: in decode one frame per token passing through it.
      const frames = Number(m.framesProcessedTotal);
      const t = Number(m.timestampUnixMs) || at;
      const fps = n.framesAt !== undefined && t > n.framesAt && frames >= (n.framesTotal ?? 0)
        ? (frames - (n.framesTotal ?? 0)) / ((t - n.framesAt) / 1000)
        : 0;
      const node: NodeView = {
        ...n,
        tps: [...n.tps, Math.max(m.tokensPerSecond, fps)].slice(-SPARK_SAMPLES),
        fps,
        framesTotal: frames,
        framesAt: t,
        cpu: m.cpuPercent,
        memTotal: Number(m.memoryTotalBytes),
        memAvail: Number(m.memoryAvailableBytes),
        rss: Number(m.processResidentBytes),
        sessions: m.activeSessions,
      };
      return { ...s, nodes: { ...s.nodes, [m.nodeId]: node } };
    }
    case "transfer": {
      const t = ev.value;
      const prev = s.transfers[t.nodeId];
      const view: TransferView = {
        model: t.model,
        state: t.state,
        done: Number(t.bytesDone),
        total: Number(t.bytesTotal),
        rate: t.bytesPerSecond,
        eta: t.etaSeconds,
        detail: t.detail,
      };
      const transfers = { ...s.transfers, [t.nodeId]: view };
      if (prev?.state === view.state) return { ...s, transfers };
      const word = (TransferState[view.state] ?? "unknown").toLowerCase();
      const level = view.state === TransferState.FAILED
        ? "bad"
        : view.state === TransferState.LOADED || view.state === TransferState.CACHED
        ? "ok"
        : "info";
      const text = `transfer ${t.nodeId}: ${word}${view.detail ? ` — ${view.detail}` : ""}`;
      return { ...s, transfers, events: pushEvent(s, { t: at, kind: "transfer", level, text }) };
    }
    default:
      return s;
  }
}

/** The reducer. */
export function reduce(s: TuiState, a: Action): TuiState {
  switch (a.type) {
    case "connected":
      // The snapshot that follows is the whole view: members and placement are rebuilt from it
      // (kept, a relink showed members the agent had since forgotten, or lost, as still there).
      return {
        ...s,
        connected: true,
        linkError: "",
        lastSequence: 0,
        nodes: {},
        placement: undefined,
        requests: {},
        transfers: {},
        replayUntil: s.seenUntil,
        events: pushEvent(s, {
          t: a.at,
          kind: "link",
          level: "ok",
          text: `linked to ${s.endpoint}`,
        }),
      };
    case "disconnected":
      if (!s.connected && s.linkError === a.error) return s;
      return {
        ...s,
        connected: false,
        linkError: a.error,
        events: pushEvent(s, {
          t: a.at,
          kind: "link",
          level: "bad",
          text: `link lost: ${a.error}`,
        }),
      };
    case "update":
      return applyUpdate(s, a.msg);
    case "tab":
      return {
        ...s,
        tab: (s.tab + a.delta + TABS.length) % TABS.length,
        selected: 0,
        expanded: false,
        inference: { ...s.inference, editing: false },
      };
    case "select":
      return { ...s, selected: Math.max(0, s.selected + a.delta) };
    case "toggleExpand":
      return { ...s, expanded: !s.expanded };
    case "help":
      return { ...s, help: a.open ?? !s.help };
    case "filterStart":
      return { ...s, filtering: true, filter: "" };
    case "filterInput":
      return { ...s, filter: (s.filter + a.text).slice(0, 40), selected: 0 };
    case "filterBackspace":
      return { ...s, filter: [...s.filter].slice(0, -1).join("") };
    case "filterEnd":
      return { ...s, filtering: false, filter: a.keep ? s.filter : "" };
    case "promptEdit":
      return { ...s, inference: { ...s.inference, editing: a.editing } };
    case "promptInput":
      return {
        ...s,
        inference: { ...s.inference, prompt: (s.inference.prompt + a.text).slice(0, 2000) },
      };
    case "promptBackspace":
      return {
        ...s,
        inference: { ...s.inference, prompt: [...s.inference.prompt].slice(0, -1).join("") },
      };
    case "inferStart":
      return {
        ...s,
        inference: {
          ...s.inference,
          editing: false,
          running: true,
          output: "",
          requestId: a.requestId,
          tokens: 0,
          tps: 0,
          ttftMs: 0,
          startedAt: a.at,
          status: "prefill: the prompt is going through every stage",
        },
      };
    case "inferToken": {
      const inf = s.inference;
      const tokens = inf.tokens + 1;
      const ttftMs = tokens === 1 ? a.at - inf.startedAt : inf.ttftMs;
      const decodeS = (a.at - inf.startedAt - ttftMs) / 1000;
      return {
        ...s,
        inference: {
          ...inf,
          tokens,
          ttftMs,
          tps: tokens > 1 && decodeS > 0 ? (tokens - 1) / decodeS : 0,
          output: inf.output + a.text,
          stages: a.stages ?? inf.stages,
          status: "decoding: one token per trip through the pipeline",
        },
      };
    }
    case "inferDone":
      return {
        ...s,
        inference: {
          ...s.inference,
          running: false,
          tps: a.tps || s.inference.tps,
          ttftMs: a.ttftMs || s.inference.ttftMs,
          status: a.status,
        },
      };
    case "inferError":
      return {
        ...s,
        inference: { ...s.inference, running: false, status: `error: ${a.error}` },
      };
  }
}
