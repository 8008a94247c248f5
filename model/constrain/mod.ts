/**
 * Constrained sampling: the output is held to a JSON shape by masking, at each step, every token
 * that could not continue a valid value. The settings are plain data ({@link JsonConstraintSpec})
 * that travel with the sampler settings; model/sampler.ts applies them.
 *
 * @example
 * ```ts
 * import { jsonConstraintFor, ANY_OBJECT } from "./mod.ts";
 * const sampler = new Sampler({ temperature: 1, json: jsonConstraintFor(tokenizer, ANY_OBJECT) });
 * ```
 *
 * @module
 */
import type { JsonConstraintSpec } from "./json.ts";
import type { SchemaNode } from "./schema.ts";
import { type TokenSource, vocabularyFingerprint } from "./vocabulary.ts";

export {
  initialState,
  isComplete,
  JsonConstraint,
  JsonConstraintError,
  type JsonConstraintSpec,
  type JsonState,
  step,
} from "./json.ts";
export {
  ANY,
  ANY_OBJECT,
  compileJsonSchema,
  type JsonPrimitive,
  JsonSchemaError,
  type ObjectNode,
  type SchemaNode,
} from "./schema.ts";
export { type OutputConstraint, ReasoningGate } from "./after_reasoning.ts";
export { decodeJsonConstraint, decodeSchemaNode, encodeJsonConstraint } from "./wire.ts";
export {
  registerTokenSource,
  type TokenSource,
  Vocabulary,
  vocabularyByFingerprint,
  vocabularyFingerprint,
  vocabularyOf,
} from "./vocabulary.ts";

/**
 * Sampler settings' `json` field for `schema` over `tokenizer`'s vocabulary; `promptTokens`
 * (how many accepted tokens precede the output) lets a replay to a new stage restore it.
 */
export function jsonConstraintFor(
  tokenizer: TokenSource,
  schema: SchemaNode,
  promptTokens?: number,
): JsonConstraintSpec {
  const spec: JsonConstraintSpec = { schema, vocabulary: vocabularyFingerprint(tokenizer) };
  if (promptTokens !== undefined) spec.promptTokens = promptTokens;
  return spec;
}
