/**
 * Sampling constrained to JSON: an incremental recogniser over output bytes (RFC 8259, held to a
 * {@link SchemaNode}) and, per step, the mask of tokens whose bytes keep the output a prefix of a
 * valid value. Once the value is complete only end-of-generation tokens are allowed, so the
 * generation ends there (or at max_tokens, "length").
 *
 * A mask is found by walking the vocabulary's byte trie from the current recogniser state,
 * pruning every branch the recogniser rejects; masks are cached per vocabulary by the state's key
 * (frames, schema node, whitespace run), so a step inside a long string or between properties
 * costs one map lookup. Recogniser states are immutable linked frames: the walk shares them.
 *
 * The settings ({@link JsonConstraintSpec}) are plain data and travel with the sampler settings;
 * model/sampler.ts applies them wherever sampling happens.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { ANY, type JsonPrimitive, type ObjectNode, type SchemaNode } from "./schema.ts";
import { type Vocabulary, vocabularyByFingerprint } from "./vocabulary.ts";

/** What a constrained generation must produce, as sampler settings carry it. */
export interface JsonConstraintSpec {
  /** The value's shape: `{kind: "object"}` for any object (response_format json_object). */
  schema: SchemaNode;
  /**
   * A thinking model's output may hold a think block before the value (after_reasoning.ts):
   * `open`, the prompt opened it; `start`, the output may open it first. Unset: none.
   */
  reasoning?: "open" | "start";
  /** The vocabulary's fingerprint (constrain/vocabulary.ts vocabularyFingerprint). */
  vocabulary: string;
  /**
   * How many of the tokens a sampler accepts first are the prompt (the output starts after
   * them), so a replay of prompt + output to a new stage restores the recogniser. Unset: the
   * tokens accepted before the first pick are the prompt.
   */
  promptTokens?: number;
}

/** Settings name a vocabulary this process has not loaded, or the output cannot continue. */
export class JsonConstraintError extends Error {
  override name = "JsonConstraintError";
}

/**
 * Most spaces or tabs after the line breaks of a whitespace run (llama.cpp's json grammar's
 * `[ \t]{0,20}`): a model that likes blanks cannot pad the output until max_tokens.
 */
const MAX_WS = 20;
/** Longest number, in bytes. */
const MAX_NUMBER = 32;
/**
 * Most digits of a number's integral part, fraction or exponent (llama.cpp's json grammar:
 * `[1-9] [0-9]{0,15}`, `[0-9]{1,16}`): a model that likes digits cannot write an integer no
 * reader holds, or run a tool call's argument on until max_tokens.
 */
const MAX_DIGITS = 16;
/** Masks kept per vocabulary (each vocabSize/8 bytes). */
const MAX_CACHED_MASKS = 512;

// --- the recogniser ---------------------------------------------------------------------------

type Frame =
  /** Expecting a value of `s` (after `ws` whitespace bytes). */
  | { t: "value"; s: SchemaNode; ws: number }
  /** Inside an object; see OBJ_* for `st`; `next`: first property not yet passed. */
  | { t: "obj"; s: ObjectNode; st: number; next: number; cur: number; ws: number }
  /** Inside an array: 0 after `[`, 1 in a value, 2 after a value, 3 after `,`. */
  | { t: "arr"; s: SchemaNode; st: number; ws: number }
  /** Inside a string after its opening quote: 0 plain, 1 after `\`, 2..5 hex digits to go. */
  | { t: "str"; st: number; need: number; lo: number; hi: number }
  /** One of several exact byte texts (literals, enums, schema keys), `pos` bytes matched. */
  | { t: "lit"; texts: Uint8Array[]; cands: number[]; pos: number; key: boolean }
  /** A number; see NUM_* for `st`. */
  | { t: "num"; st: number; int: boolean; len: number; run: number }
  /** The value is complete. */
  | { t: "done" };

/** A recogniser state: the innermost frame and the frames around it (immutable, shared). */
export interface JsonState {
  readonly f: Frame;
  readonly up: JsonState | null;
}

const OBJ_OPEN = 0, OBJ_KEY = 1, OBJ_COLON = 2, OBJ_VALUE = 3, OBJ_AFTER = 4, OBJ_COMMA = 5;
// Number states: 0 after "-", 1 after a leading 0, 2 integer digits, 3 after ".", 4 fraction
// digits, 5 after "e", 6 after the exponent's sign, 7 exponent digits.
const NUM_END_OK = [false, true, true, false, true, false, false, true];

const DONE: JsonState = { f: { t: "done" }, up: null };
const enc = new TextEncoder();
const LITERALS = {
  true: [enc.encode("true")],
  false: [enc.encode("false")],
  null: [enc.encode("null")],
};
/** A boolean's texts: one array always, so mask keys can name it. */
const BOOLEAN_TEXTS = [...LITERALS.true, ...LITERALS.false];

const isWs = (b: number) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
/** Whitespace run states (`ws`): the indent count in the low byte, and these flags. */
const ONE_SPACE = 0x100;
const NEWLINE = 0x200;
const TWO_NEWLINES = 0x400;
/** Before the document's value: one space at most (an SPM vocabulary's "▁{" token), no run. */
const ROOT = 0x800;

/**
 * A whitespace run's state after `b`, or -1 where it may not go on. A run is llama.cpp's `space`
 * rule: nothing, one space, or one or two newlines and then up to MAX_WS spaces or tabs. A looser
 * rule (20 bytes of any whitespace) let a small model spend its tokens on blanks.
 */
function moreWs(ws: number, b: number): number {
  if (ws & ROOT) return b === 0x20 ? ONE_SPACE : -1;
  if (ws & ONE_SPACE) return -1;
  if (b === 0x0a) {
    if ((ws & 0xff) > 0 || (ws & TWO_NEWLINES)) return -1;
    return ws & NEWLINE ? ws | TWO_NEWLINES : ws === 0 ? NEWLINE : -1;
  }
  if (b === 0x20 || b === 0x09) {
    if (ws & NEWLINE) return (ws & 0xff) < MAX_WS ? ws + 1 : -1;
    return b === 0x20 && ws === 0 ? ONE_SPACE : -1;
  }
  return -1;
}
const isDigit = (b: number) => b >= 0x30 && b <= 0x39;
const isHex = (b: number) => isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);

/** The state before the first byte of a value of `schema`. */
export function initialState(schema: SchemaNode): JsonState {
  // The document starts with its value, as llama.cpp's grammars' root does (but for a space).
  return { f: { t: "value", s: schema, ws: ROOT }, up: null };
}

/** True when the bytes so far are one complete value. */
export function isComplete(s: JsonState): boolean {
  return s.f.t === "done";
}

/** The state after byte `b`, or null when no valid value continues that way. */
export function step(s: JsonState, b: number): JsonState | null {
  const f = s.f;
  const up = s.up;
  switch (f.t) {
    case "done":
      return null;
    case "value":
      if (isWs(b)) {
        const ws = moreWs(f.ws, b);
        return ws < 0 ? null : { f: { ...f, ws }, up };
      }
      return startValue(f.s, b, up);
    case "str":
      // Plain string bytes leave the state as it is: no allocation on the hottest path.
      if (f.st === 0 && f.need === 0 && b >= 0x20 && b < 0x80 && b !== 0x22 && b !== 0x5c) {
        return s;
      }
      return stepString(f, b, up);
    case "lit": {
      const cands = f.cands.filter((i) => f.texts[i][f.pos] === b);
      if (cands.length === 0) {
        // A complete number text ends where a byte does not continue it; quoted texts and
        // literals end on their own last byte (below), so this only ends numeric enum values.
        const ended = f.cands.find((i) => f.texts[i].length === f.pos);
        return ended === undefined ? null : feed(complete(up, f.key ? ended : -1), b);
      }
      const pos = f.pos + 1;
      const whole = cands.filter((i) => f.texts[i].length === pos);
      if (whole.length === 1 && cands.length === 1) return complete(up, f.key ? whole[0] : -1);
      return { f: { ...f, cands, pos }, up };
    }
    case "num":
      return stepNumber(f, b, up);
    case "obj":
      return stepObject(f, b, up);
    case "arr":
      return stepArray(f, b, up);
  }
}

/** Feed `b` to `s` when `s` exists. */
function feed(s: JsonState | null, b: number): JsonState | null {
  return s === null ? null : step(s, b);
}

/** `up` after the value (or key, `key` = which property) inside it is complete. */
function complete(up: JsonState | null, key = -1): JsonState | null {
  if (up === null) return DONE;
  const f = up.f;
  if (f.t === "obj") {
    if (f.st === OBJ_KEY) return { f: { ...f, st: OBJ_COLON, cur: key, ws: 0 }, up: up.up };
    return { f: { ...f, st: OBJ_AFTER, ws: 0 }, up: up.up };
  }
  if (f.t === "arr") return { f: { ...f, st: 2, ws: 0 }, up: up.up };
  return null;
}

function startValue(s: SchemaNode, b: number, up: JsonState | null): JsonState | null {
  switch (s.kind) {
    case "any":
      if (b === 0x7b) return startValue({ kind: "object" }, b, up);
      if (b === 0x5b) return startValue({ kind: "array", items: ANY }, b, up);
      if (b === 0x22) return startValue({ kind: "string" }, b, up);
      if (b === 0x2d || isDigit(b)) return startValue({ kind: "number" }, b, up);
      if (b === 0x74 || b === 0x66) return startValue({ kind: "boolean" }, b, up);
      if (b === 0x6e) return startValue({ kind: "null" }, b, up);
      return null;
    case "object":
      return b === 0x7b ? { f: { t: "obj", s, st: OBJ_OPEN, next: 0, cur: -1, ws: 0 }, up } : null;
    case "array":
      return b === 0x5b ? { f: { t: "arr", s: s.items, st: 0, ws: 0 }, up } : null;
    case "string":
      return b === 0x22 ? { f: { t: "str", st: 0, need: 0, lo: 0, hi: 0 }, up } : null;
    case "number":
    case "integer": {
      const int = s.kind === "integer";
      if (b === 0x2d) return { f: { t: "num", st: 0, int, len: 1, run: 0 }, up };
      if (isDigit(b)) {
        return { f: { t: "num", st: b === 0x30 ? 1 : 2, int, len: 1, run: 1 }, up };
      }
      return null;
    }
    case "boolean":
      return startLiteral(BOOLEAN_TEXTS, b, up, false);
    case "null":
      return startLiteral(LITERALS.null, b, up, false);
    case "enum":
      return startLiteral(enumTexts(s.values), b, up, false);
    case "union":
      for (const m of s.of) {
        const next = startValue(m, b, up);
        if (next) return next;
      }
      return null;
  }
}

function startLiteral(
  texts: Uint8Array[],
  b: number,
  up: JsonState | null,
  key: boolean,
): JsonState | null {
  const start: JsonState = {
    f: { t: "lit", texts, cands: texts.map((_, i) => i), pos: 0, key },
    up,
  };
  return step(start, b);
}

const enumCache = new WeakMap<JsonPrimitive[], Uint8Array[]>();
function enumTexts(values: JsonPrimitive[]): Uint8Array[] {
  let t = enumCache.get(values);
  if (!t) {
    t = values.map((v) => enc.encode(JSON.stringify(v)));
    enumCache.set(values, t);
  }
  return t;
}

const keyCache = new WeakMap<object, Uint8Array[]>();
function keyTexts(s: ObjectNode): Uint8Array[] {
  let t = keyCache.get(s);
  if (!t) {
    t = s.props!.map((p) => enc.encode(JSON.stringify(p.name)));
    keyCache.set(s, t);
  }
  return t;
}

function stepString(
  f: Extract<Frame, { t: "str" }>,
  b: number,
  up: JsonState | null,
): JsonState | null {
  if (f.need > 0) {
    if (b < f.lo || b > f.hi) return null;
    return { f: { t: "str", st: 0, need: f.need - 1, lo: 0x80, hi: 0xbf }, up };
  }
  if (f.st === 1) {
    if (b === 0x75) return { f: { ...f, st: 2 }, up };
    return '"\\/bfnrt'.includes(String.fromCharCode(b)) ? { f: { ...f, st: 0 }, up } : null;
  }
  if (f.st >= 2) {
    if (!isHex(b)) return null;
    return { f: { ...f, st: f.st === 5 ? 0 : f.st + 1 }, up };
  }
  if (b === 0x22) return complete(up);
  if (b === 0x5c) return { f: { ...f, st: 1 }, up };
  if (b < 0x20) return null;
  if (b < 0x80) return { f, up };
  // UTF-8: a lead byte and the range its next continuation byte must fall in (no overlongs,
  // no surrogates, nothing past U+10FFFF), so the output always decodes.
  let need = 0, lo = 0x80, hi = 0xbf;
  if (b >= 0xc2 && b <= 0xdf) need = 1;
  else if (b === 0xe0) [need, lo] = [2, 0xa0];
  else if (b === 0xed) [need, hi] = [2, 0x9f];
  else if (b >= 0xe1 && b <= 0xef) need = 2;
  else if (b === 0xf0) [need, lo] = [3, 0x90];
  else if (b === 0xf4) [need, hi] = [3, 0x8f];
  else if (b >= 0xf1 && b <= 0xf3) need = 3;
  else return null;
  return { f: { t: "str", st: 0, need, lo, hi }, up };
}

function stepNumber(
  f: Extract<Frame, { t: "num" }>,
  b: number,
  up: JsonState | null,
): JsonState | null {
  let st = -1;
  switch (f.st) {
    case 0:
      if (isDigit(b)) st = b === 0x30 ? 1 : 2;
      break;
    case 1:
      if (!f.int && b === 0x2e) st = 3;
      else if (!f.int && (b === 0x65 || b === 0x45)) st = 5;
      break;
    case 2:
      if (isDigit(b)) st = 2;
      else if (!f.int && b === 0x2e) st = 3;
      else if (!f.int && (b === 0x65 || b === 0x45)) st = 5;
      break;
    case 3:
    case 4:
      if (isDigit(b)) st = 4;
      else if (f.st === 4 && (b === 0x65 || b === 0x45)) st = 5;
      break;
    case 5:
      if (b === 0x2b || b === 0x2d) st = 6;
      else if (isDigit(b)) st = 7;
      break;
    case 6:
    case 7:
      if (isDigit(b)) st = 7;
      break;
  }
  if (st >= 0) {
    // A state that cannot end the number ("1.", "1e", "1e-") needs room for one more byte;
    // else the mask allowed a token after which no token can continue (the request failed).
    const len = f.len + 1;
    // Digits of the current part (integral, fraction, exponent), at most MAX_DIGITS each: a
    // digit adds one; ".", "e" and the exponent's sign start the next part.
    const run = st === 3 || st === 5 || st === 6 ? 0 : f.run + 1;
    const fits = len <= MAX_NUMBER && run <= MAX_DIGITS && (NUM_END_OK[st] || len < MAX_NUMBER);
    return fits ? { f: { ...f, st, len, run }, up } : null;
  }
  return NUM_END_OK[f.st] ? feed(complete(up), b) : null;
}

/** Properties a key may name now: from `next` up to and including the first required one. */
function allowedProps(s: ObjectNode, next: number): number[] {
  const out: number[] = [];
  for (let i = next; i < s.props!.length; i++) {
    out.push(i);
    if (s.props![i].required) break;
  }
  return out;
}

function requiredLeft(s: ObjectNode, next: number): boolean {
  return s.props !== undefined && s.props.slice(next).some((p) => p.required);
}

function stepObject(
  f: Extract<Frame, { t: "obj" }>,
  b: number,
  up: JsonState | null,
): JsonState | null {
  const self = (st: number, more: Partial<typeof f> = {}): JsonState => ({
    f: { ...f, st, ws: 0, ...more },
    up,
  });
  if (isWs(b) && f.st !== OBJ_KEY && f.st !== OBJ_VALUE) {
    const ws = moreWs(f.ws, b);
    return ws < 0 ? null : { f: { ...f, ws }, up };
  }
  const startKey = (): JsonState | null => {
    if (b !== 0x22) return null;
    const parent = self(OBJ_KEY);
    if (!f.s.props) return { f: { t: "str", st: 0, need: 0, lo: 0, hi: 0 }, up: parent };
    const cands = allowedProps(f.s, f.next);
    if (cands.length === 0) return null;
    return step({ f: { t: "lit", texts: keyTexts(f.s), cands, pos: 0, key: true }, up: parent }, b);
  };
  switch (f.st) {
    case OBJ_OPEN:
      if (b === 0x7d) return requiredLeft(f.s, f.next) ? null : complete(up);
      return startKey();
    case OBJ_COLON: {
      if (b !== 0x3a) return null;
      const schema = f.s.props ? f.s.props[f.cur].schema : ANY;
      const next = f.s.props ? f.cur + 1 : 0;
      return { f: { t: "value", s: schema, ws: 0 }, up: self(OBJ_VALUE, { next }) };
    }
    case OBJ_AFTER:
      if (b === 0x7d) return requiredLeft(f.s, f.next) ? null : complete(up);
      if (b === 0x2c) {
        if (f.s.props && f.next >= f.s.props.length) return null;
        return self(OBJ_COMMA);
      }
      return null;
    case OBJ_COMMA:
      return startKey();
  }
  return null;
}

function stepArray(
  f: Extract<Frame, { t: "arr" }>,
  b: number,
  up: JsonState | null,
): JsonState | null {
  if (isWs(b) && f.st !== 1) {
    const ws = moreWs(f.ws, b);
    return ws < 0 ? null : { f: { ...f, ws }, up };
  }
  const value = () =>
    step({ f: { t: "value", s: f.s, ws: 0 }, up: { f: { ...f, st: 1, ws: 0 }, up } }, b);
  switch (f.st) {
    case 0:
      return b === 0x5d ? complete(up) : value();
    case 2:
      if (b === 0x5d) return complete(up);
      return b === 0x2c ? { f: { ...f, st: 3, ws: 0 }, up } : null;
    case 3:
      return value();
  }
  return null;
}

// --- state keys and masks ---------------------------------------------------------------------

/** Numbers schema nodes in a stable walk order, so equal schemas give equal state keys. */
/**
 * The literal text lists a schema's states can hold, each named by its schema node's id: enum
 * values ("e3"), an object's keys ("k5"), booleans and null. Two constraints on the same schema
 * name them alike (ids follow the schema's shape), so their mask cache keys agree.
 */
function literalTexts(ids: Map<object, number>): Map<Uint8Array[], string> {
  const out = new Map<Uint8Array[], string>([[BOOLEAN_TEXTS, "b"], [LITERALS.null, "n"]]);
  for (const [node, id] of ids) {
    const n = node as SchemaNode;
    if (n.kind === "enum") out.set(enumTexts(n.values), `e${id}`);
    else if (n.kind === "object" && n.props) out.set(keyTexts(n), `k${id}`);
  }
  return out;
}

function nodeIds(root: SchemaNode): Map<object, number> {
  const ids = new Map<object, number>();
  const walk = (n: SchemaNode) => {
    if (ids.has(n)) return;
    ids.set(n, ids.size);
    if (n.kind === "object") n.props?.forEach((p) => walk(p.schema));
    else if (n.kind === "array") walk(n.items);
    else if (n.kind === "union") n.of.forEach(walk);
  };
  walk(root);
  return ids;
}

// --- the constraint ----------------------------------------------------------------------------

/**
 * One generation's JSON constraint: the recogniser over the output so far and the token mask
 * for the next step.
 *
 * @example
 * ```ts
 * const c = new JsonConstraint({ schema: ANY_OBJECT, vocabulary: vocabularyFingerprint(tok) });
 * const allowed = c.mask(); // bit i set: token i may come next
 * c.accept(id);             // after sampling id
 * ```
 */
export class JsonConstraint {
  /** The vocabulary the mask is over. */
  readonly vocabulary: Vocabulary;
  #state: JsonState;
  #mask: Uint8Array | undefined;
  readonly #ids: Map<object, number>;
  /** Each literal text list the schema can start, named by its node (see #stateKey). */
  readonly #texts: Map<Uint8Array[], string>;
  readonly #schemaKey: string;

  /** Resolve `spec`'s vocabulary (a tokenizer with that fingerprint must be loaded). */
  constructor(readonly spec: JsonConstraintSpec) {
    const v = vocabularyByFingerprint(spec.vocabulary);
    if (!v) {
      throw new JsonConstraintError(
        `the JSON constraint names vocabulary ${spec.vocabulary}, which no tokenizer in this ` +
          `process has (the stage must load the same model as the head)`,
      );
    }
    this.vocabulary = v;
    this.#state = initialState(spec.schema);
    this.#ids = nodeIds(spec.schema);
    this.#texts = literalTexts(this.#ids);
    // A digest, not the schema: the cache keys of every state would each repeat it.
    this.#schemaKey = createHash("sha256").update(JSON.stringify(spec.schema)).digest("base64");
  }

  /** The output so far is a complete value: only end-of-generation tokens may follow. */
  get complete(): boolean {
    return isComplete(this.#state);
  }

  /** Advance over one output token; throws when the token cannot continue the value. */
  accept(id: number): void {
    const v = this.vocabulary;
    if (this.complete) {
      if (v.eog.includes(id)) return;
      throw new JsonConstraintError(`token ${id} follows a complete JSON value`);
    }
    const bytes = id >= 0 && id < v.size ? v.pieces[id] : new Uint8Array(0);
    if (bytes.length === 0 || !this.#advance(bytes)) {
      throw new JsonConstraintError(`token ${id} cannot continue the JSON output`);
    }
  }

  /** Advance over output bytes that are part of a token (after_reasoning.ts: after `</think>`). */
  acceptBytes(bytes: Uint8Array): void {
    if (!this.#advance(bytes)) {
      throw new JsonConstraintError(
        `${JSON.stringify(new TextDecoder().decode(bytes))} cannot begin the JSON output`,
      );
    }
  }

  #advance(bytes: Uint8Array): boolean {
    let s: JsonState | null = this.#state;
    for (let i = 0; s && i < bytes.length; i++) s = step(s, bytes[i]);
    if (!s) return false;
    this.#state = s;
    this.#mask = undefined;
    return true;
  }

  /** Bitset over token ids (bit `id & 7` of byte `id >> 3`): the tokens allowed next. */
  mask(): Uint8Array {
    if (this.#mask) return this.#mask;
    const v = this.vocabulary;
    const key = `${this.#schemaKey}\u0000${this.#stateKey()}`;
    let m = v.masks.get(key);
    if (m) {
      // Most recently used last, so the oldest is evicted first.
      v.masks.delete(key);
      v.masks.set(key, m);
    } else {
      m = this.#compute();
      v.masks.set(key, m);
      if (v.masks.size > MAX_CACHED_MASKS) v.masks.delete(v.masks.keys().next().value!);
    }
    this.#mask = m;
    return m;
  }

  /** Is token `id` allowed next? */
  allows(id: number): boolean {
    const m = this.mask();
    return id >= 0 && id < this.vocabulary.size && (m[id >> 3] & (1 << (id & 7))) !== 0;
  }

  #stateKey(): string {
    const parts: string[] = [];
    for (let s: JsonState | null = this.#state; s; s = s.up) {
      const f = s.f;
      switch (f.t) {
        case "value":
          parts.push(`v${this.#ids.get(f.s) ?? "a"},${f.ws}`);
          break;
        case "obj":
          parts.push(`o${this.#ids.get(f.s) ?? "a"},${f.st},${f.next},${f.cur},${f.ws}`);
          break;
        case "arr":
          parts.push(`a${this.#ids.get(f.s) ?? "a"},${f.st},${f.ws}`);
          break;
        case "str":
          parts.push(`s${f.st},${f.need},${f.lo},${f.hi}`);
          break;
        case "lit": {
          // The texts by the node they belong to, and all candidates as "*" (an enum's first
          // byte): keys stay small whatever the enum (its size is bounded by schema.ts).
          const texts = this.#texts.get(f.texts) ??
            f.texts.map((t) => new TextDecoder().decode(t)).join("\u0001");
          const cands = f.cands.length === f.texts.length ? "*" : f.cands.join(".");
          parts.push(`l${texts},${cands},${f.pos},${f.key}`);
          break;
        }
        case "num":
          parts.push(`n${f.st},${f.int},${f.len},${f.run}`);
          break;
        case "done":
          parts.push("d");
      }
    }
    return parts.join("|");
  }

  #compute(): Uint8Array {
    const v = this.vocabulary;
    const bits = new Uint8Array((v.size + 7) >> 3);
    const set = (id: number) => (bits[id >> 3] |= 1 << (id & 7));
    if (this.complete) {
      for (const id of v.eog) set(id);
      return bits;
    }
    // Depth-first over the trie, pruning each branch at the first byte the recogniser refuses.
    const nodes: number[] = [];
    const states: JsonState[] = [];
    for (let c = v.firstChild[0]; c >= 0; c = v.nextSibling[c]) {
      nodes.push(c);
      states.push(this.#state);
    }
    while (nodes.length > 0) {
      const node = nodes.pop()!;
      const next = step(states.pop()!, v.byte[node]);
      if (!next) continue;
      for (let t = v.tokenHead[node]; t >= 0; t = v.tokenNext[t]) set(t);
      for (let c = v.firstChild[node]; c >= 0; c = v.nextSibling[c]) {
        nodes.push(c);
        states.push(next);
      }
    }
    return bits;
  }
}
