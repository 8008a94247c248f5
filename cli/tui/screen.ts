/**
 * A character grid the TUI draws into (one cell per column, every character single-width), and
 * its serialization to ANSI with or without colors. Layout writes cells, effects rewrite them,
 * the terminal prints them: none of the three knows about the others.
 *
 * @example
 * ```ts
 * const s = new Screen(80, 24);
 * s.box({ x: 0, y: 0, w: 80, h: 24 }, "CLUSTER", "normal");
 * s.text(2, 1, "hello", "bright");
 * console.log(s.lines().join("\n"));
 * ```
 *
 * @module
 */

/** Cell styles: the phosphor palette's roles. */
export type Style = "normal" | "dim" | "bright" | "ok" | "warn" | "bad" | "inv" | "title";

/** A rectangle in cells. */
export interface Rect {
  x: number;
  y: number;
  w: number;
  h: number;
}

/** One cell. */
export interface Cell {
  ch: string;
  style: Style;
}

/** Characters that take no column: combining marks, format characters (ZWJ, soft hyphen). */
const ZERO_WIDTH = /^[\p{M}\p{Cf}]$/u;
/** Characters terminals draw two columns wide by default: emoji presentation (✅ ⚡ ⌛). */
const EMOJI = /^\p{Emoji_Presentation}$/u;

/**
 * Make text take exactly one column per character: controls and zero-width characters are
 * dropped (a tab is a space), wide ones (CJK, emoji) become "?". Model output reaches the screen
 * through here, and one character of the wrong width moves every border after it.
 */
export function sanitize(text: string): string {
  let out = "";
  for (const ch of text) {
    const c = ch.codePointAt(0)!;
    if (c < 0x20 || (c >= 0x7f && c < 0xa0)) out += c === 0x09 ? " " : "";
    else if (ZERO_WIDTH.test(ch) || c === 0x200b) continue;
    else if (isWide(c) || EMOJI.test(ch)) out += "?";
    else out += ch;
  }
  return out;
}

function isWide(c: number): boolean {
  return (c >= 0x1100 && c <= 0x115f) || (c >= 0x2e80 && c <= 0xa4cf) ||
    (c >= 0xac00 && c <= 0xd7a3) || (c >= 0xf900 && c <= 0xfaff) ||
    (c >= 0xfe30 && c <= 0xfe4f) || (c >= 0xff00 && c <= 0xff60) ||
    (c >= 0xffe0 && c <= 0xffe6) || c >= 0x1f000;
}

/** The grid. */
export class Screen {
  readonly cells: Cell[][];

  constructor(readonly width: number, readonly height: number) {
    this.cells = Array.from(
      { length: height },
      () => Array.from({ length: width }, () => ({ ch: " ", style: "normal" as Style })),
    );
  }

  /** Set one cell (ignored outside the grid). */
  set(x: number, y: number, ch: string, style: Style = "normal"): void {
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return;
    this.cells[y][x] = { ch, style };
  }

  /** Write text from (x, y), clipped at `maxW` columns and the grid's edge. Returns columns used. */
  text(x: number, y: number, text: string, style: Style = "normal", maxW = Infinity): number {
    let i = 0;
    for (const ch of sanitize(text)) {
      if (i >= maxW || x + i >= this.width) break;
      this.set(x + i, y, ch, style);
      i++;
    }
    return i;
  }

  /** Fill a rectangle. */
  fill(r: Rect, ch = " ", style: Style = "normal"): void {
    for (let y = r.y; y < r.y + r.h; y++) {
      for (let x = r.x; x < r.x + r.w; x++) this.set(x, y, ch, style);
    }
  }

  /** A box-drawing frame with an optional title (and right-hand label) on its top edge. */
  box(r: Rect, title = "", style: Style = "normal", label = "", labelStyle: Style = style): void {
    if (r.w < 2 || r.h < 2) return;
    const x2 = r.x + r.w - 1;
    const y2 = r.y + r.h - 1;
    for (let x = r.x + 1; x < x2; x++) {
      this.set(x, r.y, "─", style);
      this.set(x, y2, "─", style);
    }
    for (let y = r.y + 1; y < y2; y++) {
      this.set(r.x, y, "│", style);
      this.set(x2, y, "│", style);
    }
    this.set(r.x, r.y, "┌", style);
    this.set(x2, r.y, "┐", style);
    this.set(r.x, y2, "└", style);
    this.set(x2, y2, "┘", style);
    const room = r.w - 4;
    let used = 0;
    if (title && room > 0) used = this.text(r.x + 2, r.y, ` ${title} `, "title", room);
    if (label && room - used > label.length + 2) {
      this.text(x2 - label.length - 2, r.y, ` ${label} `, labelStyle);
    }
  }

  /** The grid as plain text lines (trailing spaces kept: each line is exactly `width`). */
  lines(): string[] {
    return this.cells.map((row) => row.map((c) => c.ch).join(""));
  }

  /** A deep copy (effects work on a copy so the layout's grid stays pristine). */
  clone(): Screen {
    const s = new Screen(this.width, this.height);
    for (let y = 0; y < this.height; y++) {
      for (let x = 0; x < this.width; x++) s.cells[y][x] = { ...this.cells[y][x] };
    }
    return s;
  }
}

/** SGR sequences of the phosphor palette (256 colors). */
const SGR: Record<Style, string> = {
  normal: "38;5;40",
  dim: "38;5;28",
  bright: "1;38;5;120",
  ok: "38;5;46",
  warn: "38;5;214",
  bad: "1;38;5;196",
  inv: "30;48;5;40",
  title: "1;38;5;157",
};

/** One frame as terminal output: home, every row (cleared to its end). */
export function toAnsi(screen: Screen, color: boolean): string {
  let out = "\x1b[H";
  for (let y = 0; y < screen.height; y++) {
    let cur: Style | undefined;
    let line = "";
    for (const c of screen.cells[y]) {
      if (color && c.style !== cur) {
        line += `\x1b[0;${SGR[c.style]}m`;
        cur = c.style;
      }
      line += c.ch;
    }
    out += line + (color ? "\x1b[0m" : "") + (y < screen.height - 1 ? "\r\n" : "");
  }
  return out;
}
