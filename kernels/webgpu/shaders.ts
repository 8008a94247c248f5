/**
 * Shader composition: `common.wgsl` + one op file, with the block-decoding section of one weight
 * type (`quant.wgsl`) spliced in at `{{DECODE}}`, `//#if NAME` … `//#else` … `//#endif` blocks
 * resolved against a set of defines, and `{{NAME}}` placeholders substituted.
 *
 * @module
 */
import { WGSL_SOURCES } from "./shaders.gen.ts";

/** How to specialise one op file. */
export interface ComposeOptions {
  /** Weight type whose quant.wgsl section replaces `{{DECODE}}` (e.g. "Q4_K", "F32"). */
  readonly decode?: string;
  /** Names that are true in `//#if` lines. */
  readonly defines?: readonly string[];
  /** Values for `{{NAME}}` placeholders. */
  readonly subst?: Readonly<Record<string, string | number>>;
  /** Directives put first (e.g. `enable f16;`): WGSL wants them before any declaration. */
  readonly prelude?: string;
}

function source(name: string): string {
  const text = WGSL_SOURCES[name];
  if (text === undefined) throw new Error(`no WGSL file named ${name}.wgsl`);
  return text;
}

/**
 * The `//@section NAME` part of quant.wgsl, preceded by its shared prelude; without `dot`, the
 * section stops at its `//@dot` line (the dot part needs activation accessors only matmul has).
 */
export function decodeSnippet(type: string, dot: boolean): string {
  const text = source("quant");
  const parts = text.split(/^\/\/@section (\w+)\s*$/m);
  const prelude = parts[0];
  for (let i = 1; i < parts.length; i += 2) {
    if (parts[i] !== type) continue;
    const [elem, dotPart] = parts[i + 1].split(/^\/\/@dot\s*$/m);
    return prelude + elem + (dot ? dotPart ?? "" : "");
  }
  throw new Error(`quant.wgsl has no section for ${type}`);
}

/** Resolve `//#if A || B`, `//#else`, `//#endif` lines (nestable). */
export function preprocess(text: string, defines: ReadonlySet<string>): string {
  const out: string[] = [];
  const stack: { parentOn: boolean; cond: boolean; inElse: boolean }[] = [];
  let on = true;
  for (const line of text.split("\n")) {
    const m = line.match(/^\s*\/\/#(if|else|endif)\b(.*)$/);
    if (!m) {
      if (on) out.push(line);
      continue;
    }
    if (m[1] === "if") {
      const cond = m[2].split("||").some((n) => defines.has(n.trim()));
      stack.push({ parentOn: on, cond, inElse: false });
      on = on && cond;
    } else if (m[1] === "else") {
      const top = stack.at(-1);
      if (!top || top.inElse) throw new Error("WGSL preprocessor: stray //#else");
      top.inElse = true;
      on = top.parentOn && !top.cond;
    } else {
      const top = stack.pop();
      if (!top) throw new Error("WGSL preprocessor: stray //#endif");
      on = top.parentOn;
    }
  }
  if (stack.length) throw new Error("WGSL preprocessor: missing //#endif");
  return out.join("\n");
}

/** Full WGSL for op file `name` (without extension) specialised by `opts`. */
export function compose(name: string, opts: ComposeOptions = {}): string {
  let text = source("common") + "\n" + source(name);
  if (text.includes("{{DECODE}}")) {
    if (!opts.decode) throw new Error(`${name}.wgsl needs a weight type to decode`);
    text = text.replace("{{DECODE}}", decodeSnippet(opts.decode, text.includes("acc_add(")));
  }
  text = (opts.prelude ?? "") + preprocess(text, new Set(opts.defines ?? []));
  return text.replace(/\{\{(\w+)\}\}/g, (_, k: string) => {
    const v = opts.subst?.[k];
    if (v === undefined) throw new Error(`${name}.wgsl: no value for {{${k}}}`);
    return String(v);
  });
}
