/**
 * A Hugging Face Hub model reference, the form accepted wherever a GGUF path is:
 *
 * - `hf:owner/repo/path/to/file.gguf` — one file by its path in the repository;
 * - `hf:owner/repo:Q4_K_M` — the repository's single-file GGUF whose name carries that quant
 *   tag (case-insensitive), as llama.cpp's `-hf owner/repo:Q4_K_M`;
 * - `hf:owner/repo` — the repository's only GGUF model file;
 * - any of them with `@revision` at the end (a branch, tag or commit; default `main`).
 *
 * Anything else is a plain path and is left alone.
 *
 * @example
 * ```ts
 * const ref = parseHubReference("hf:ggml-org/gemma-3-1b-it-GGUF:Q4_K_M@main");
 * // { repo: "ggml-org/gemma-3-1b-it-GGUF", quant: "Q4_K_M", revision: "main", … }
 * isHubReference("/models/llama.gguf"); // false
 * ```
 *
 * @module
 */
import { HubError } from "./errors.ts";

/** The prefix that marks a Hub reference. */
export const HUB_PREFIX = "hf:";

/** The revision a reference without `@revision` names (the Hub's default branch). */
export const DEFAULT_REVISION = "main";

/** A parsed `hf:` reference. */
export interface HubReference {
  /** `owner/repo`. */
  readonly repo: string;
  readonly owner: string;
  readonly name: string;
  /** The file's path in the repository, when the reference names one. */
  readonly file?: string;
  /** The quant tag to pick a file by (`Q4_K_M`), when the reference gives one. */
  readonly quant?: string;
  /** Branch, tag or commit hash. */
  readonly revision: string;
  /** Whether `@revision` was written (a commit hash then needs no network to find its cache). */
  readonly revisionGiven: boolean;
}

/** The grammar, quoted in every parse error. */
export const HUB_REFERENCE_FORMS =
  "hf:owner/repo/path/file.gguf, hf:owner/repo:QUANT or hf:owner/repo, each with an optional " +
  "@revision at the end";

/** Repository owner and name: the Hub's repo-id rules (letters, digits, `-`, `_`, `.`; ≤ 96). */
const NAME = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?$/;
/** A quant tag such as Q4_K_M, IQ2_XXS, F16, BF16, Q8_0. */
const QUANT = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;
/** A git revision: branch or tag names (which may hold `/`, as refs/pr/1), or a hash. */
const REVISION = /^[A-Za-z0-9._][A-Za-z0-9._/-]{0,199}$/;
/** A commit hash as the Hub names commits (40 hex digits). */
const COMMIT = /^[0-9a-f]{40}$/;

/** Whether `model` is a Hub reference rather than a path. */
export function isHubReference(model: string): boolean {
  return model.startsWith(HUB_PREFIX);
}

/** Whether `revision` is a full commit hash. */
export function isCommitHash(revision: string): boolean {
  return COMMIT.test(revision);
}

/** Parse an `hf:` reference; throws {@linkcode HubError} (`usage`) naming what is wrong. */
export function parseHubReference(text: string): HubReference {
  const bad = (why: string) =>
    new HubError(
      "usage",
      `invalid Hub reference "${text}": ${why} (forms: ${HUB_REFERENCE_FORMS})`,
    );
  if (!isHubReference(text)) throw bad(`it does not start with "${HUB_PREFIX}"`);
  let body = text.slice(HUB_PREFIX.length);
  let revision = DEFAULT_REVISION;
  let revisionGiven = false;
  const at = body.lastIndexOf("@");
  if (at >= 0) {
    revision = body.slice(at + 1);
    body = body.slice(0, at);
    revisionGiven = true;
    if (!REVISION.test(revision) || revision.split("/").some((s) => s === "" || s === "..")) {
      throw bad(`"${revision}" is not a revision (a branch, tag or commit hash)`);
    }
  }
  let quant: string | undefined;
  const colon = body.indexOf(":");
  if (colon >= 0) {
    quant = body.slice(colon + 1);
    body = body.slice(0, colon);
    if (!QUANT.test(quant)) throw bad(`"${quant}" is not a quant tag such as Q4_K_M`);
  }
  const parts = body.split("/");
  if (parts.length < 2 || !parts[0] || !parts[1]) throw bad("it names no owner/repo");
  const [owner, name, ...rest] = parts;
  for (const n of [owner, name]) {
    if (!NAME.test(n) || n.includes("--") || n.includes("..")) {
      throw bad(`"${n}" is not a valid Hub owner or repository name`);
    }
  }
  let file: string | undefined;
  if (rest.length) {
    if (quant !== undefined) throw bad("give a file path or a :QUANT tag, not both");
    file = rest.join("/");
    if (
      rest.some((s) => s === "" || s === "." || s === "..") || file.includes("\\") ||
      file.includes("\0")
    ) {
      throw bad(`"${file}" is not a file path inside the repository`);
    }
  }
  return { repo: `${owner}/${name}`, owner, name, file, quant, revision, revisionGiven };
}

/** The reference written back (`hf:owner/repo:Q4_K_M@main`). */
export function formatHubReference(ref: HubReference): string {
  const what = ref.file ? `/${ref.file}` : ref.quant ? `:${ref.quant}` : "";
  return `${HUB_PREFIX}${ref.repo}${what}${ref.revisionGiven ? `@${ref.revision}` : ""}`;
}
