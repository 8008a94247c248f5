/** The wire contract behaves as its comments promise: presence, enums, bytes, oneofs. */
import { create, fromBinary, fromJson, toBinary, toJson } from "@bufbuild/protobuf";
import {
  ActivationFrameSchema,
  Dtype,
  ExecuteCommandRequestSchema,
  FinishReason,
  ForwardResponseSchema,
  GenerateResponseSchema,
  NodeInfoSchema,
  NodeState,
  SamplerParamsSchema,
} from "../../proto/mod.ts";
import { assert, assertEquals } from "../support/assert.ts";

Deno.test("ActivationFrame round-trips rows, control, sampler (sent once, in open) and the chain", () => {
  const rows = new Float32Array([1.5, -2, 3.25, 0, 7, 8]);
  const frame = create(ActivationFrameSchema, {
    sessionId: "s-1",
    step: 0n,
    fromLayer: 4,
    shape: [2, 3],
    dtype: Dtype.F32,
    data: new Uint8Array(rows.buffer),
    positions: [0, 1],
    tokens: [1, 15043],
    open: {
      model: "stories260K",
      placementEpoch: 7n,
      sampler: { temperature: 0, topLogprobs: 5 },
      downstream: [{ nodeId: "b", fromLayer: 6, toLayer: 9, version: 3n }],
    },
  });
  const back = fromBinary(ActivationFrameSchema, toBinary(ActivationFrameSchema, frame));
  assertEquals(back.toLayer, undefined); // unset = to the end of the stage's range
  assertEquals(back.open?.placementEpoch, 7n);
  assertEquals(Array.from(new Float32Array(back.data.slice().buffer)), Array.from(rows));
  // Explicit presence: temperature 0 (greedy) is not the same as unset (engine default 0.8).
  assertEquals(back.open?.sampler?.temperature, 0);
  assertEquals(back.open?.sampler?.topK, undefined);
  assertEquals(back.open?.downstream.map((h) => [h.nodeId, h.fromLayer, h.toLayer]), [["b", 6, 9]]);
  assertEquals(create(SamplerParamsSchema, {}).temperature, undefined);
});

Deno.test("ForwardResponse carries exactly one result", () => {
  const r = create(ForwardResponseSchema, {
    sessionId: "s",
    step: 3n,
    nextLayer: 8,
    result: { case: "token", value: { tokenId: 42, logprob: -0.1 } },
  });
  const back = fromBinary(ForwardResponseSchema, toBinary(ForwardResponseSchema, r));
  assertEquals(back.result.case, "token");
  assertEquals(back.result.case === "token" && back.result.value.tokenId, 42);
});

Deno.test("JSON names follow the proto (what Connect JSON clients and curl see)", () => {
  const n = create(NodeInfoSchema, {
    id: "a",
    state: NodeState.SUSPECT,
    rpcPort: 7950,
    incarnation: 5n,
  });
  const json = toJson(NodeInfoSchema, n);
  assertEquals(json as unknown, {
    id: "a",
    rpcPort: 7950,
    state: "NODE_STATE_SUSPECT",
    incarnation: "5",
  });
  assertEquals(fromJson(NodeInfoSchema, json).state, NodeState.SUSPECT);
  const g = create(GenerateResponseSchema, { finishReason: FinishReason.STOP_SEQUENCE });
  assertEquals(
    (toJson(GenerateResponseSchema, g) as { finishReason: string }).finishReason,
    "FINISH_REASON_STOP_SEQUENCE",
  );
  const cmd = create(ExecuteCommandRequestSchema, {
    command: { case: "drainNode", value: { nodeId: "b" } },
  });
  assert(
    JSON.stringify(toJson(ExecuteCommandRequestSchema, cmd)).includes('"drainNode":{"nodeId":"b"}'),
  );
});
