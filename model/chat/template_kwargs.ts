/**
 * Extra variables for a chat template (`chat_template_kwargs`, as llama.cpp's server and vLLM
 * take them): e.g. `{"enable_thinking": false}`, which Qwen3's template reads to write an empty
 * think block. Checked here once for every door (HTTP and gRPC): an object of bounded size whose
 * keys do not shadow what the renderer itself passes.
 *
 * @module
 */

/** Most characters of a kwargs object as JSON (they are rendered into every prompt). */
export const MAX_TEMPLATE_KWARGS_CHARS = 16 * 1024;
/** Most keys. */
export const MAX_TEMPLATE_KWARGS_KEYS = 64;
/** Deepest nesting of a value. */
const MAX_DEPTH = 16;

/**
 * Variables the renderer sets itself: a kwarg of that name would replace the conversation, the
 * tools or the special tokens the prompt is built from.
 */
export const RESERVED_TEMPLATE_VARS: readonly string[] = [
  "messages",
  "tools",
  "add_generation_prompt",
  "bos_token",
  "eos_token",
];

/** A kwargs object that cannot be used; `path` names the field. */
export class TemplateKwargsError extends Error {
  /** Error name. */
  override name = "TemplateKwargsError";
  /** Bad input: RPC callers see INVALID_ARGUMENT (HTTP 400). */
  readonly rpcCode = "invalid_argument";
  /** @param path the offending field @param message what is wrong with it */
  constructor(readonly path: string, message: string) {
    super(message);
  }
}

/** Whether `v` nests deeper than `left` levels (it stops descending there: no deep recursion). */
function deeper(v: unknown, left: number): boolean {
  if (typeof v !== "object" || v === null) return false;
  if (left === 0) return true;
  return Object.values(v).some((x) => deeper(x, left - 1));
}

/**
 * `raw` checked as template variables (`path`: the field's name for errors): a JSON object of
 * at most {@linkcode MAX_TEMPLATE_KWARGS_KEYS} keys and {@linkcode MAX_TEMPLATE_KWARGS_CHARS}
 * characters, none of {@linkcode RESERVED_TEMPLATE_VARS}, and `enable_thinking` (the one every
 * thinking template reads) a boolean, as llama.cpp demands.
 */
export function checkTemplateKwargs(raw: unknown, path: string): Record<string, unknown> {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new TemplateKwargsError(
      path,
      `${path} must be an object of template variables, like {"enable_thinking": false}`,
    );
  }
  const keys = Object.keys(raw);
  if (keys.length > MAX_TEMPLATE_KWARGS_KEYS) {
    throw new TemplateKwargsError(path, `${path} holds at most ${MAX_TEMPLATE_KWARGS_KEYS} keys`);
  }
  // Depth first: JSON.stringify of a deep value recurses as deep.
  if (deeper(raw, MAX_DEPTH)) {
    throw new TemplateKwargsError(path, `${path} is nested more than ${MAX_DEPTH} deep`);
  }
  if (JSON.stringify(raw).length > MAX_TEMPLATE_KWARGS_CHARS) {
    throw new TemplateKwargsError(
      path,
      `${path} is longer than ${MAX_TEMPLATE_KWARGS_CHARS} characters of JSON`,
    );
  }
  for (const key of keys) {
    if (RESERVED_TEMPLATE_VARS.includes(key)) {
      throw new TemplateKwargsError(
        `${path}.${key}`,
        `${path}.${key} would replace the template's own ${key}; send it as the request's ` +
          `field, not as a template variable (reserved: ${RESERVED_TEMPLATE_VARS.join(", ")})`,
      );
    }
  }
  const thinking = (raw as Record<string, unknown>).enable_thinking;
  if (thinking !== undefined && typeof thinking !== "boolean") {
    throw new TemplateKwargsError(
      `${path}.enable_thinking`,
      `${path}.enable_thinking must be true or false, got ${JSON.stringify(thinking)}`,
    );
  }
  return raw as Record<string, unknown>;
}
