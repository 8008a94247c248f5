/**
 * The interactive terminal UI of `llmctl tui`: a reducer over ClusterService's update stream
 * (state.ts), a pure layout (layout.ts) into a character grid (screen.ts), glitch effects
 * (effects.ts), keys (keys.ts), and the program that wires them to a terminal (app.ts).
 *
 * @example
 * ```ts
 * import { initialState, reduce, render } from "./mod.ts";
 * let s = initialState("127.0.0.1:7950");
 * s = reduce(s, { type: "connected", at: Date.now() });
 * console.log(render(s, { width: 80, height: 24, now: Date.now(), glitch: "off" }).screen.lines());
 * ```
 *
 * @module
 */
export { runTui, type TuiOptions } from "./app.ts";
export { GlitchEngine, type GlitchKind, rng } from "./effects.ts";
export { type Command, interpret, type Key, parseKeys } from "./keys.ts";
export {
  type Frame,
  type FrameInfo,
  MIN_HEIGHT,
  MIN_WIDTH,
  rangeBar,
  render,
  sparkline,
  wrap,
} from "./layout.ts";
export { type Cell, type Rect, sanitize, Screen, type Style, toAnsi } from "./screen.ts";
export {
  type Action,
  type EventLine,
  type InferenceView,
  initialState,
  type NodeView,
  reduce,
  stateWord,
  TABS,
  type TuiState,
} from "./state.ts";
