/**
 * Keyboard: raw terminal bytes to key names, and key names to what they mean in the current
 * state (reducer actions plus commands for the app: quit, send a prompt, glitch switches).
 *
 * @module
 */
import type { Action, TuiState } from "./state.ts";

/** A key press: a name ("tab", "up", "enter", …) or one printable character. */
export type Key = { name: string } | { char: string };

const SEQUENCES: Record<string, string> = {
  "\x1b[A": "up",
  "\x1b[B": "down",
  "\x1b[C": "right",
  "\x1b[D": "left",
  "\x1bOA": "up",
  "\x1bOB": "down",
  "\x1bOC": "right",
  "\x1bOD": "left",
  "\x1b[Z": "shift-tab",
  "\x1b[5~": "pageup",
  "\x1b[6~": "pagedown",
};

/** Split one read of stdin into keys. */
export function parseKeys(data: string): Key[] {
  const keys: Key[] = [];
  let i = 0;
  while (i < data.length) {
    const rest = data.slice(i);
    const seq = Object.keys(SEQUENCES).find((s) => rest.startsWith(s));
    if (seq) {
      keys.push({ name: SEQUENCES[seq] });
      i += seq.length;
      continue;
    }
    if (rest.startsWith("\x1b[") || rest.startsWith("\x1bO")) {
      // An unknown CSI sequence: skip it whole.
      // deno-lint-ignore no-control-regex
      const m = /^\x1b[[O][0-9;]*[A-Za-z~]/.exec(rest);
      i += m ? m[0].length : 2;
      continue;
    }
    const ch = String.fromCodePoint(rest.codePointAt(0)!);
    i += ch.length;
    if (ch === "\x1b") keys.push({ name: "esc" });
    else if (ch === "\t") keys.push({ name: "tab" });
    else if (ch === "\r" || ch === "\n") keys.push({ name: "enter" });
    else if (ch === "\x7f" || ch === "\b") keys.push({ name: "backspace" });
    else if (ch === "\x03") keys.push({ name: "ctrl-c" });
    else if (ch >= " ") keys.push({ char: ch });
  }
  return keys;
}

/** What the app must do besides reducing. */
export type Command =
  | { type: "quit" }
  | { type: "send" }
  | { type: "glitchToggle" }
  | { type: "glitchLevel"; level: number }
  | { type: "glitchBurst" };

/** Interpret a key in `state`. */
export function interpret(state: TuiState, key: Key): { actions: Action[]; commands: Command[] } {
  const act = (...actions: Action[]) => ({ actions, commands: [] as Command[] });
  const cmd = (...commands: Command[]) => ({ actions: [] as Action[], commands });
  const name = "name" in key ? key.name : "";
  const ch = "char" in key ? key.char : "";
  if (name === "ctrl-c") return cmd({ type: "quit" });
  if (state.filtering) {
    if (name === "enter") return act({ type: "filterEnd", keep: true });
    if (name === "esc") return act({ type: "filterEnd", keep: false });
    if (name === "backspace") return act({ type: "filterBackspace" });
    return ch ? act({ type: "filterInput", text: ch }) : act();
  }
  if (state.tab === 3 && state.inference.editing) {
    if (name === "enter") {
      return state.inference.running ? act() : cmd({ type: "send" });
    }
    if (name === "esc") return act({ type: "promptEdit", editing: false });
    if (name === "backspace") return act({ type: "promptBackspace" });
    if (name === "tab" || name === "shift-tab") {
      return act({ type: "tab", delta: name === "tab" ? 1 : -1 });
    }
    return ch ? act({ type: "promptInput", text: ch }) : act();
  }
  if (state.help && (ch === "?" || name === "esc")) return act({ type: "help", open: false });
  switch (name) {
    case "tab":
    case "right":
      return act({ type: "tab", delta: 1 });
    case "shift-tab":
    case "left":
      return act({ type: "tab", delta: -1 });
    case "down":
      return act({ type: "select", delta: state.tab === 4 ? -1 : 1 });
    case "up":
      return act({ type: "select", delta: state.tab === 4 ? 1 : -1 });
    case "pagedown":
      return act({ type: "select", delta: state.tab === 4 ? -10 : 10 });
    case "pageup":
      return act({ type: "select", delta: state.tab === 4 ? 10 : -10 });
    case "enter":
      if (state.tab === 3) return act({ type: "promptEdit", editing: true });
      return act({ type: "toggleExpand" });
    case "esc":
      return state.filter
        ? act({ type: "filterEnd", keep: false })
        : act({ type: "help", open: false });
  }
  switch (ch) {
    case "q":
      return cmd({ type: "quit" });
    case "j":
      return act({ type: "select", delta: state.tab === 4 ? -1 : 1 });
    case "k":
      return act({ type: "select", delta: state.tab === 4 ? 1 : -1 });
    case "/":
      return act({ type: "filterStart" });
    case "?":
      return act({ type: "help" });
    case "g":
      return cmd({ type: "glitchToggle" });
    case "G":
      return cmd({ type: "glitchBurst" });
    case "1":
    case "2":
    case "3":
    case "4":
    case "5":
      return cmd({ type: "glitchLevel", level: Number(ch) });
  }
  return act();
}
