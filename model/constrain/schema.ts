/**
 * The JSON shapes a constrained generation can be held to, as plain data (they travel with the
 * sampler settings to whichever stage samples), and the JSON Schema subset that compiles to them.
 *
 * Supported JSON Schema (what OpenAI's `response_format: {type: "json_schema"}` strict schemas
 * use most): `type` `object` (with `properties`, `required`, `additionalProperties`), `array`
 * (with `items`), `string`, `number`, `integer`, `boolean`, `null`, a list of those types (e.g.
 * `["string", "null"]`), `enum` and `const` of strings, numbers, booleans and null. Annotations
 * (`title`, `description`, `$schema`, `default`, `examples`, `$comment`) are ignored. Anything
 * else (`$ref`, `anyOf`, `pattern`, `minLength`, `format`, …) is refused with a
 * {@link JsonSchemaError} naming it, rather than generating output the schema would reject.
 *
 * Generated objects hold their properties in the order `properties` lists them (optional ones
 * may be left out, additional ones never appear), so every output validates against the schema.
 *
 * @module
 */

/** A JSON shape: any value, an object, an array, a primitive type, an enum, or a union. */
export type SchemaNode =
  | { kind: "any" }
  | ObjectNode
  | { kind: "array"; items: SchemaNode }
  | { kind: "string" | "number" | "integer" | "boolean" | "null" }
  | { kind: "enum"; values: JsonPrimitive[] }
  | { kind: "union"; of: SchemaNode[] };

/** An object: without `props` any object, else exactly these properties in this order. */
export interface ObjectNode {
  kind: "object";
  props?: { name: string; schema: SchemaNode; required: boolean }[];
}

/** A value an enum may list. */
export type JsonPrimitive = string | number | boolean | null;

/** Any JSON value. */
export const ANY: SchemaNode = { kind: "any" };

/** A JSON object of any shape: what `response_format: {type: "json_object"}` asks for. */
export const ANY_OBJECT: SchemaNode = { kind: "object" };

/** A schema uses something outside the supported subset; the message names it and where. */
export class JsonSchemaError extends Error {
  override name = "JsonSchemaError";
}

const ANNOTATIONS = new Set([
  "title",
  "description",
  "$schema",
  "$id",
  "default",
  "examples",
  "$comment",
  "readOnly",
  "writeOnly",
  "deprecated",
]);
const PRIMITIVE_TYPES = new Set(["string", "number", "integer", "boolean", "null"]);
/** Deepest nesting accepted: keeps the recogniser's stack (and a hostile schema) bounded. */
const MAX_DEPTH = 32;
/** Most schema nodes: a schema is compiled per request. */
const MAX_NODES = 2048;
/**
 * Most enum/const values in one schema, and most characters of property names and enum/const
 * strings together: OpenAI's limits for structured outputs (1000 and 15 000). Every mask step
 * filters a literal's candidates and the masks are cached by state: a 40 000-value enum in a
 * 349 KB schema held 358 MB of cache keys and 1.2 GB of RSS after one request.
 */
export const MAX_ENUM_VALUES = 1000;
/** See {@link MAX_ENUM_VALUES}. */
export const MAX_SCHEMA_TEXT = 15_000;

/**
 * Counts a schema's enum values and text against MAX_ENUM_VALUES and MAX_SCHEMA_TEXT; `fail`
 * throws with the message.
 */
export function schemaBudget(fail: (why: string) => never) {
  let values = 0;
  let text = 0;
  return {
    names(names: readonly string[]): void {
      for (const n of names) text += n.length;
      if (text > MAX_SCHEMA_TEXT) {
        fail(`property names and enum strings exceed ${MAX_SCHEMA_TEXT} characters`);
      }
    },
    values(vs: readonly unknown[]): void {
      values += vs.length;
      if (values > MAX_ENUM_VALUES) fail(`more than ${MAX_ENUM_VALUES} enum/const values`);
      this.names(vs.filter((v): v is string => typeof v === "string"));
    },
  };
}

/**
 * Compile a JSON Schema (the subset in the module doc) into a {@link SchemaNode}; the root must
 * be an object, as OpenAI requires for structured outputs.
 *
 * @example
 * ```ts
 * const node = compileJsonSchema({
 *   type: "object",
 *   properties: { name: { type: "string" }, age: { type: "integer" } },
 *   required: ["name", "age"],
 *   additionalProperties: false,
 * });
 * ```
 */
export function compileJsonSchema(schema: unknown): SchemaNode {
  let nodes = 0;
  const fail = (path: string, why: string): never => {
    throw new JsonSchemaError(`${path || "schema"}: ${why}`);
  };
  const budget = schemaBudget((why) => fail("schema", why));
  const walk = (s: unknown, path: string, depth: number): SchemaNode => {
    if (++nodes > MAX_NODES) fail(path, `more than ${MAX_NODES} schema nodes`);
    if (depth > MAX_DEPTH) fail(path, `nested deeper than ${MAX_DEPTH} levels`);
    if (s === true) return ANY;
    if (typeof s !== "object" || s === null || Array.isArray(s)) {
      return fail(path, "must be a schema object");
    }
    const o = s as Record<string, unknown>;
    const known = new Set(["type", "properties", "required", "additionalProperties", "items"]);
    for (const k of Object.keys(o)) {
      if (ANNOTATIONS.has(k) || known.has(k) || k === "enum" || k === "const") continue;
      fail(
        path,
        `"${k}" is not supported (supported: type, properties, required, ` +
          `additionalProperties, items, enum, const)`,
      );
    }
    if ("const" in o || "enum" in o) {
      const values = "const" in o ? [o.const] : o.enum;
      if (!Array.isArray(values) || values.length === 0) {
        return fail(`${path}.enum`, "must be a non-empty array");
      }
      for (const v of values) {
        const ok = v === null || ["string", "boolean"].includes(typeof v) ||
          (typeof v === "number" && Number.isFinite(v));
        if (!ok) fail(`${path}.enum`, `only strings, numbers, booleans and null are supported`);
      }
      budget.values(values);
      if ("properties" in o || "items" in o) {
        fail(path, "enum/const cannot be combined with properties or items");
      }
      // `{"type": "string", "enum": [...]}` is the usual spelling (OpenAI's own get_weather
      // example): the type then only has to admit every value, which the enum narrows.
      if ("type" in o) {
        const types = Array.isArray(o.type) ? o.type : [o.type];
        for (const v of values) {
          if (!types.some((t) => typeAdmits(t, v))) {
            fail(`${path}.enum`, `${JSON.stringify(v)} is not of type ${JSON.stringify(o.type)}`);
          }
        }
      }
      return { kind: "enum", values: values as JsonPrimitive[] };
    }
    const type = o.type;
    if (type === undefined) {
      if ("properties" in o) return objectNode(o, path, depth);
      if ("items" in o) return arrayNode(o, path, depth);
      return ANY;
    }
    if (Array.isArray(type)) {
      if (type.length === 0) return fail(`${path}.type`, "must not be empty");
      const of: SchemaNode[] = [];
      for (const t of new Set(type)) {
        if (typeof t !== "string" || !PRIMITIVE_TYPES.has(t)) {
          return fail(
            `${path}.type`,
            `a list of types may hold only string, number, integer, boolean and null ` +
              `(got ${JSON.stringify(t)}); use one type for objects and arrays`,
          );
        }
        of.push({ kind: t as "string" });
      }
      // number covers integer; both would make "-1" ambiguous between two branches.
      const kinds = of.filter((n) => !(n.kind === "integer" && type.includes("number")));
      return kinds.length === 1 ? kinds[0] : { kind: "union", of: kinds };
    }
    if (type === "object") return objectNode(o, path, depth);
    if (type === "array") return arrayNode(o, path, depth);
    if (typeof type === "string" && PRIMITIVE_TYPES.has(type)) {
      for (const k of ["properties", "items", "required"]) {
        if (k in o) fail(path, `"${k}" needs type object/array, not ${type}`);
      }
      return { kind: type as "string" };
    }
    return fail(`${path}.type`, `unknown type ${JSON.stringify(type)}`);
  };
  const objectNode = (o: Record<string, unknown>, path: string, depth: number): SchemaNode => {
    if ("items" in o) fail(path, `"items" needs type array`);
    const extra = o.additionalProperties;
    if (extra !== undefined && typeof extra !== "boolean") {
      fail(`${path}.additionalProperties`, "only true or false is supported");
    }
    const required = o.required ?? [];
    if (!Array.isArray(required) || !required.every((r) => typeof r === "string")) {
      return fail(`${path}.required`, "must be an array of property names");
    }
    if (o.properties === undefined) {
      if (required.length > 0) fail(`${path}.required`, "names properties that are not defined");
      // No properties and none additional: only the empty object validates.
      return extra === false ? { kind: "object", props: [] } : { kind: "object" };
    }
    if (typeof o.properties !== "object" || o.properties === null) {
      return fail(`${path}.properties`, "must be an object");
    }
    budget.names(Object.keys(o.properties));
    const props = Object.entries(o.properties as Record<string, unknown>).map(([name, s]) => ({
      name,
      schema: walk(s, `${path}.properties.${name}`, depth + 1),
      required: required.includes(name),
    }));
    for (const r of required) {
      if (!props.some((p) => p.name === r)) {
        fail(`${path}.required`, `names ${JSON.stringify(r)}, which properties does not define`);
      }
    }
    return { kind: "object", props };
  };
  const arrayNode = (o: Record<string, unknown>, path: string, depth: number): SchemaNode => {
    if ("properties" in o || "required" in o) fail(path, `"properties" needs type object`);
    if (Array.isArray(o.items)) fail(`${path}.items`, "tuple schemas are not supported");
    return {
      kind: "array",
      items: o.items === undefined ? ANY : walk(o.items, `${path}.items`, depth + 1),
    };
  };
  const root = walk(schema, "", 0);
  if (root.kind !== "object") {
    throw new JsonSchemaError(`schema: the root must be an object (type "object")`);
  }
  return root;
}

/** Whether JSON Schema type `t` admits the primitive `v`. */
function typeAdmits(t: unknown, v: unknown): boolean {
  switch (t) {
    case "string":
      return typeof v === "string";
    case "number":
      return typeof v === "number";
    case "integer":
      return Number.isInteger(v);
    case "boolean":
      return typeof v === "boolean";
    case "null":
      return v === null;
    default:
      return false;
  }
}
