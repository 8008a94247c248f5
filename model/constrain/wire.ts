/**
 * JSON constraint settings as text, for wire formats (a proto `string` field): what a stage
 * receives from the network is untrusted, so decoding checks every field, bounds the schema's
 * depth and size, and answers a JsonConstraintError naming what is wrong.
 *
 * @example
 * ```ts
 * const text = encodeJsonConstraint(jsonConstraintFor(tokenizer, ANY_OBJECT, prompt.length));
 * const spec = decodeJsonConstraint(text); // on the stage that samples
 * ```
 *
 * @module
 */
import { JsonConstraintError, type JsonConstraintSpec } from "./json.ts";
import { schemaBudget, type SchemaNode } from "./schema.ts";

/** Deepest schema and most nodes a decoded spec may hold (compileJsonSchema's bounds). */
const MAX_DEPTH = 32;
const MAX_NODES = 2048;

/** The settings as compact JSON text. */
export function encodeJsonConstraint(spec: JsonConstraintSpec): string {
  return JSON.stringify(spec);
}

/** Settings from {@link encodeJsonConstraint}'s text, checked field by field. */
export function decodeJsonConstraint(text: string): JsonConstraintSpec {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new JsonConstraintError(`JSON constraint settings are not JSON: ${(e as Error).message}`);
  }
  const o = raw as Record<string, unknown>;
  if (typeof o !== "object" || o === null || Array.isArray(o)) {
    throw new JsonConstraintError("JSON constraint settings must be an object");
  }
  if (typeof o.vocabulary !== "string" || !/^v\d+-[0-9a-f]{16}$/.test(o.vocabulary)) {
    throw new JsonConstraintError("JSON constraint settings name no vocabulary fingerprint");
  }
  const spec: JsonConstraintSpec = { schema: decodeSchemaNode(o.schema), vocabulary: o.vocabulary };
  if (o.reasoning !== undefined) {
    if (o.reasoning !== "open" && o.reasoning !== "start") {
      throw new JsonConstraintError('JSON constraint reasoning must be "open" or "start"');
    }
    spec.reasoning = o.reasoning;
  }
  if (o.promptTokens !== undefined) {
    if (!Number.isInteger(o.promptTokens) || (o.promptTokens as number) < 0) {
      throw new JsonConstraintError("JSON constraint promptTokens must be a count");
    }
    spec.promptTokens = o.promptTokens as number;
  }
  return spec;
}

/** A SchemaNode from untrusted data (the shapes of schema.ts only, bounded). */
export function decodeSchemaNode(raw: unknown): SchemaNode {
  let nodes = 0;
  const fail = (why: string): never => {
    throw new JsonConstraintError(`JSON constraint schema: ${why}`);
  };
  const budget = schemaBudget(fail);
  const walk = (x: unknown, depth: number): SchemaNode => {
    if (++nodes > MAX_NODES) fail(`more than ${MAX_NODES} nodes`);
    if (depth > MAX_DEPTH) fail(`deeper than ${MAX_DEPTH} levels`);
    const n = x as Record<string, unknown>;
    if (typeof n !== "object" || n === null || Array.isArray(n)) {
      return fail("a node is not an object");
    }
    switch (n.kind) {
      case "any":
      case "string":
      case "number":
      case "integer":
      case "boolean":
      case "null":
        return { kind: n.kind };
      case "array":
        return { kind: "array", items: walk(n.items, depth + 1) };
      case "union":
        if (!Array.isArray(n.of) || n.of.length === 0) return fail("a union lists no members");
        return { kind: "union", of: n.of.map((m) => walk(m, depth + 1)) };
      case "enum":
        if (
          !Array.isArray(n.values) || n.values.length === 0 ||
          !n.values.every((v) =>
            v === null || typeof v === "string" || typeof v === "boolean" ||
            (typeof v === "number" && Number.isFinite(v))
          )
        ) return fail("an enum must list strings, numbers, booleans or null");
        budget.values(n.values);
        return { kind: "enum", values: n.values };
      case "object": {
        if (n.props === undefined) return { kind: "object" };
        if (!Array.isArray(n.props)) return fail("object props must be a list");
        budget.names(n.props.map((p) => typeof p?.name === "string" ? p.name : ""));
        return {
          kind: "object",
          props: n.props.map((p) => {
            if (typeof p?.name !== "string" || typeof p?.required !== "boolean") {
              fail("a property needs a name and required");
            }
            return { name: p.name, required: p.required, schema: walk(p.schema, depth + 1) };
          }),
        };
      }
      default:
        return fail(`unknown kind ${JSON.stringify(n.kind)}`);
    }
  };
  return walk(raw, 0);
}
