/** Checks shared by the tests of response_format json_object through real agents. */
import { ANY_OBJECT, initialState, type JsonState, step } from "../../model/constrain/mod.ts";
import { assert, assertEquals } from "./assert.ts";

/**
 * A completion under json_object: a whole JSON object when it stopped, else (cut by max_tokens,
 * finish_reason "length") a prefix of one — never free text.
 */
export function assertJsonObjectOrPrefix(text: string, finishReason: string): void {
  if (finishReason === "stop") {
    const v = JSON.parse(text);
    assert(typeof v === "object" && v !== null && !Array.isArray(v), text);
    return;
  }
  assertEquals(finishReason, "length");
  let st: JsonState | null = initialState(ANY_OBJECT);
  for (const b of new TextEncoder().encode(text)) st = st && step(st, b);
  assert(st !== null, `not a prefix of a JSON object: ${JSON.stringify(text)}`);
}
