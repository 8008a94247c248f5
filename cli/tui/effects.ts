/**
 * Glitch effects: character corruption, line duplication and offset, static bursts, a rolling
 * scanline and flicker, applied to a copy of a rendered {@linkcode Screen}. Events fire them
 * (a node dies → its box glitches) and so does the user (`G`); `g` toggles, `1`–`5` set the
 * intensity. Separate from layout: effects only rewrite cells the layout already drew.
 *
 * @example
 * ```ts
 * const fx = new GlitchEngine({ enabled: true, seed: 1 });
 * fx.fire("corrupt", "node:b", now, 1200);
 * const shown = fx.apply(frame.screen, frame.regions, now);
 * ```
 *
 * @module
 */
import type { Rect, Screen, Style } from "./screen.ts";
import { Rng } from "../../model/sampler.ts";

/** Kinds of glitch. */
export type GlitchKind = "corrupt" | "duplicate" | "offset" | "static" | "flicker";

interface Glitch {
  kind: GlitchKind;
  /** Region name ("node:b", "content"), or "" for the whole screen. */
  target: string;
  until: number;
}

const NOISE = "▓▒░█#@%&$/\\|<>{}=+*?!";
const STATIC = "░▒▓ ·:";

/** A small seeded PRNG (reproducible tests): the sampler's Rng. */
export function rng(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.next();
}

/** The glitch engine: active glitches and the switches. */
export class GlitchEngine {
  enabled: boolean;
  /** 1 (subtle) … 5 (wild). */
  intensity: number;
  private active: Glitch[] = [];
  private readonly random: () => number;

  constructor(opts: { enabled: boolean; intensity?: number; seed?: number }) {
    this.enabled = opts.enabled;
    this.intensity = opts.intensity ?? 3;
    this.random = rng(opts.seed ?? Date.now());
  }

  /** Whether a frame must be redrawn soon (something is animating). */
  get busy(): boolean {
    return this.enabled && this.active.length > 0;
  }

  /** Start a glitch on `target` for `ms`. Ignored while disabled. */
  fire(kind: GlitchKind, target: string, now: number, ms: number): void {
    if (!this.enabled) return;
    this.active.push({ kind, target, until: now + ms * (0.6 + this.intensity * 0.2) });
  }

  /** The `G` key: a burst over the whole screen. */
  burst(now: number): void {
    this.fire("static", "", now, 450);
    this.fire("offset", "content", now, 600);
    this.fire("duplicate", "content", now, 600);
    this.fire("flicker", "", now, 300);
  }

  /** A node's state changed: suspect → corruption; dead → everything on its box. */
  nodeChanged(id: string, state: "suspect" | "dead" | "alive", now: number): void {
    const target = `node:${id}`;
    if (state === "suspect") this.fire("corrupt", target, now, 900);
    else if (state === "dead") {
      this.fire("corrupt", target, now, 1600);
      this.fire("duplicate", target, now, 1200);
      this.fire("offset", target, now, 1000);
      this.fire("static", "", now, 250);
    } else this.fire("flicker", "", now, 150);
  }

  /** A copy of `screen` with the active glitches (and the scanline) applied. */
  apply(screen: Screen, regions: Record<string, Rect>, now: number): Screen {
    this.active = this.active.filter((g) => g.until > now);
    if (!this.enabled) return screen;
    const out = screen.clone();
    const whole: Rect = { x: 0, y: 0, w: out.width, h: out.height };
    const k = this.intensity / 5;
    for (const g of this.active) {
      const r = g.target ? regions[g.target] ?? regions.content ?? whole : whole;
      switch (g.kind) {
        case "corrupt":
          this.scatter(out, r, 0.06 + 0.25 * k, NOISE, "bad");
          break;
        case "static":
          this.scatter(out, r, 0.1 + 0.4 * k, STATIC, "dim");
          break;
        case "duplicate": {
          const y = r.y + Math.floor(this.random() * Math.max(1, r.h - 1));
          this.copyRow(out, r, y, y + 1, Math.round((this.random() - 0.5) * 6 * k));
          break;
        }
        case "offset": {
          const lines = 1 + Math.floor(this.random() * 3 * k);
          for (let i = 0; i < lines; i++) {
            const y = r.y + Math.floor(this.random() * r.h);
            this.copyRow(out, r, y, y, Math.round((this.random() - 0.5) * 8 * k) || 1);
          }
          break;
        }
        case "flicker":
          if (Math.floor(now / 60) % 2 === 0) {
            for (const row of out.cells) for (const c of row) c.style = "dim";
          }
          break;
      }
    }
    // The rolling scanline: one brighter row sweeping down the screen.
    const scan = Math.floor(now / 90) % (out.height * 3);
    if (scan < out.height) {
      for (const c of out.cells[scan]) {
        if (c.style === "normal" || c.style === "dim") c.style = "bright";
      }
    }
    return out;
  }

  private scatter(s: Screen, r: Rect, p: number, chars: string, style: Style) {
    for (let y = r.y; y < r.y + r.h; y++) {
      for (let x = r.x; x < r.x + r.w; x++) {
        if (this.random() < p) s.set(x, y, chars[Math.floor(this.random() * chars.length)], style);
      }
    }
  }

  /** Copy row `from` onto row `to` within `r`, shifted by `dx` columns. */
  private copyRow(s: Screen, r: Rect, from: number, to: number, dx: number) {
    if (from < 0 || to < 0 || from >= s.height || to >= s.height) return;
    const src = s.cells[from].slice(r.x, r.x + r.w).map((c) => ({ ...c }));
    for (let i = 0; i < src.length; i++) {
      const x = r.x + i + dx;
      if (x >= r.x && x < r.x + r.w) s.set(x, to, src[i].ch, src[i].style);
    }
  }
}
