/** Human output helpers: aligned tables and humanized sizes and durations. */

/** "1.2 MB"-style size (powers of 1000, as disks and networks are sold). */
export function formatBytes(n: number): string {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return i === 0 ? `${Math.round(n)} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

/** "850 ms", "12.3 s", "4m 05s". */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
}

/**
 * Left-aligned columns separated by two spaces, with a header row. `style` may color a body
 * cell after it is padded (so colors never break the alignment).
 */
export function table(
  header: string[],
  rawRows: string[][],
  style?: (col: number, cell: string, padded: string) => string,
): string {
  // Cells hold what files and peers say (metadata, model ids, tensor names): escaped, so a
  // control sequence in them cannot clear the screen, retitle the terminal or shift columns.
  const rows = rawRows.map((r) => r.map(printable));
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[], body: boolean) =>
    cells.map((c, i) => {
      const padded = i === cells.length - 1 ? c : c.padEnd(widths[i]);
      return body && style ? style(i, c, padded) : padded;
    }).join("  ").trimEnd();
  return [line(header, false), ...rows.map((r) => line(r, true))].join("\n");
}

/** Control characters: C0, DEL, C1. */
// deno-lint-ignore no-control-regex
const CONTROLS = /[\x00-\x1f\x7f-\x9f]/g;
/** Control characters but tab and newline, and ESC unless it starts a color (SGR) sequence. */
// deno-lint-ignore no-control-regex
const UNSAFE = /\x1b(?!\[[0-9;]*m)|[\x00-\x08\x0b-\x1a\x1c-\x1f\x7f-\x9f]/g;

/**
 * `text` with its control characters (C0, DEL, C1) written as `\xNN`: what a GGUF file, a model
 * id or a peer says is printed, never obeyed by the terminal.
 */
export function printable(text: string): string {
  return text.replace(CONTROLS, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}

/**
 * console.log for human output that holds what files and peers say: their control characters
 * escaped (printable) except this tool's own colors (SGR sequences), so an agent's model id or a
 * GGUF key cannot clear the screen, set the terminal's title or move the cursor.
 */
export function say(...parts: unknown[]): void {
  console.log(parts.map(String).join(" ").replace(UNSAFE, printable));
}

/** Whether human output may use ANSI colors: stdout is a terminal and NO_COLOR is unset. */
export function colorEnabled(): boolean {
  if (Deno.env.get("NO_COLOR")) return false;
  try {
    return Deno.stdout.isTerminal();
  } catch {
    return false;
  }
}

const SGR = { red: 31, green: 32, yellow: 33, blue: 34, magenta: 35, cyan: 36, gray: 90, bold: 1 };

/** Color helpers that do nothing when colors are off. */
export function palette(on = colorEnabled()): Record<keyof typeof SGR, (s: string) => string> {
  const out = {} as Record<keyof typeof SGR, (s: string) => string>;
  for (const [k, code] of Object.entries(SGR)) {
    out[k as keyof typeof SGR] = on ? (s) => `\x1b[${code}m${s}\x1b[0m` : (s) => s;
  }
  return out;
}

/** A `width`-cell bar with [from, to) of `total` filled: "····████████······". */
export function layerBar(from: number, to: number, total: number, width: number): string {
  if (total <= 0 || width <= 0) return "";
  const a = Math.round((from / total) * width);
  const b = Math.max(a + (to > from ? 1 : 0), Math.round((to / total) * width));
  return "·".repeat(a) + "█".repeat(b - a) + "·".repeat(Math.max(0, width - b));
}
