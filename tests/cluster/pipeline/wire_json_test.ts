/** The sampling settings a remote tail gets: the JSON constraint (checked on arrival) and the logprob switch. */
import {
  samplingFromWire,
  samplingToWire,
  WireFormatError,
} from "../../../cluster/pipeline/wire.ts";
import { ANY_OBJECT, type JsonConstraintSpec } from "../../../model/constrain/mod.ts";
import { assertEquals, assertThrows } from "../../support/assert.ts";

Deno.test("wire: sampling settings carry the JSON constraint both ways", () => {
  const json: JsonConstraintSpec = {
    schema: ANY_OBJECT,
    vocabulary: "v1-0123456789abcdef",
    promptTokens: 7,
  };
  const back = samplingFromWire(samplingToWire({ temperature: 1, json }));
  assertEquals(back.json, json);
  assertEquals(back.temperature, 1);
  assertEquals(samplingFromWire(samplingToWire({ temperature: 0 })).json, undefined);
});

Deno.test("wire: a malformed JSON constraint is INVALID_ARGUMENT, not a crash", () => {
  const w = samplingToWire({});
  w.json = '{"schema":{"kind":"object"},"vocabulary":5}';
  assertThrows(() => samplingFromWire(w), WireFormatError, "json");
  w.json = "not json";
  assertThrows(() => samplingFromWire(w), WireFormatError, "json");
});

Deno.test("sampling settings: skipping the token's logprob survives the wire; the default computes it", () => {
  assertEquals(samplingFromWire(samplingToWire({ temperature: 1, logprob: false })).logprob, false);
  assertEquals(samplingFromWire(samplingToWire({ temperature: 1 })).logprob, undefined);
  assertEquals(
    samplingFromWire(samplingToWire({ temperature: 1, logprob: true })).logprob,
    undefined,
  );
});
