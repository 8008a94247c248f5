/** InferenceService at the RPC edge (cluster/agent/inference_rpc.ts), over a fake head. */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { forwardContext, inferenceService } from "../../../cluster/agent/inference_rpc.ts";
import type { HeadEvent, HeadParams, HeadService } from "../../../cluster/agent/head_service.ts";
import type { AgentState } from "../../../cluster/agent/state.ts";
import type { ServedModel } from "../../../cluster/agent/served_model.ts";
import type { PlacementLoop } from "../../../cluster/agent/placement_loop.ts";
import type { AgentMetrics } from "../../../cluster/telemetry/mod.ts";
import { createRpcTransport, startRpcServer } from "../../../cluster/rpc/mod.ts";
import { headSessionId } from "../../../cluster/pipeline/mod.ts";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import {
  Dtype,
  FinishReason,
  GenerateRequestSchema,
  GenerateResponseSchema,
  InferenceService,
} from "../../../proto/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";
import { enveloped, rawCall } from "../rpc/fixtures.ts";

/**
 * A head that sends a token every 20 ms until its signal aborts or Cancel is called, then ends
 * with "cancelled", as the real head does.
 */
function slowHead(): HeadService {
  const model = { tokenizer: { decode: () => "" } } as unknown as ServedModel;
  const running = new Map<string, AbortController>();
  return {
    async *generate(p: HeadParams, signal: AbortSignal): AsyncIterable<HeadEvent> {
      const stop = new AbortController();
      running.set(p.requestId!, stop);
      let index = 0;
      while (!signal.aborted && !stop.signal.aborted) {
        yield {
          kind: "token",
          requestId: p.requestId!,
          model,
          index: index++,
          token: { id: 1, logprob: 0, top: [] },
          text: "a",
        } as HeadEvent;
        await new Promise((r) => setTimeout(r, 20));
      }
      yield {
        kind: "done",
        requestId: p.requestId!,
        model,
        index,
        text: "",
        finishReason: "cancelled",
        cachedTokens: 0,
        promptTokens: 1,
        completionTokens: index,
        timeToFirstTokenMs: 0,
        decodeTokensPerSecond: 0,
        recoveries: 0,
      };
    },
    cancel(id: string) {
      running.get(id)?.abort();
      return running.has(id);
    },
  } as unknown as HeadService;
}

async function serve() {
  const state = {
    nodeId: "h",
    config: { prefillChunk: 64 },
  } as unknown as AgentState;
  const loop = { epoch: 1n, message: () => undefined } as unknown as PlacementLoop;
  const head = slowHead();
  const server = await startRpcServer({
    port: 0,
    routes: (r) =>
      r.service(
        InferenceService,
        inferenceService(state, head, loop, undefined as unknown as AgentMetrics),
      ),
  });
  return { server, head };
}

/** The GenerateResponse messages of a raw gRPC answer's body. */
function messages(body: Uint8Array) {
  const out = [];
  for (let at = 0; at + 5 <= body.length;) {
    const n = new DataView(body.buffer, body.byteOffset + at + 1, 4).getUint32(0);
    out.push(fromBinary(GenerateResponseSchema, body.subarray(at + 5, at + 5 + n)));
    at += 5 + n;
  }
  return out;
}

Deno.test("a Generate whose deadline passes ends DEADLINE_EXCEEDED; one cancelled ends OK with CANCELLED", async () => {
  const { server, head } = await serve();
  const path = "/distributed_llm.v1.InferenceService/Generate";
  const request = (id: string) =>
    enveloped(
      toBinary(
        GenerateRequestSchema,
        create(GenerateRequestSchema, { prompt: "hi", requestId: id }),
      ),
    );
  try {
    // What grpcio saw: status OK and finish_reason CANCELLED once its deadline passed.
    const late = await rawCall(server.port, path, request("late"), {
      headers: { "grpc-timeout": "200m" },
    });
    assertEquals(late.grpcStatus, "4", late.grpcMessage);
    // Cancel still ends the stream with an answer.
    setTimeout(() => head.cancel("stopped"), 100);
    const stopped = await rawCall(server.port, path, request("stopped"), { collect: true });
    assertEquals(stopped.grpcStatus, "0", stopped.grpcMessage);
    assertEquals(messages(stopped.body!).at(-1)?.finishReason, FinishReason.CANCELLED);
  } finally {
    await server.close();
  }
});

Deno.test("a Generate asking for f16 activations is refused, naming activation_dtype (they travel as f32)", async () => {
  const { server } = await serve();
  const t = await createRpcTransport(`127.0.0.1:${server.port}`, { gzip: false });
  try {
    const client = createClient(InferenceService, t);
    const e = await (async () => {
      for await (const _ of client.generate({ prompt: "hi", activationDtype: Dtype.F16 }));
    })().then(() => null, (e) => e);
    assert(e instanceof ConnectError && e.code === Code.InvalidArgument, String(e));
    assert(e.rawMessage.includes("activation_dtype DTYPE_F16"), e.rawMessage);
    // f32, asked for or not, runs.
    for (const activationDtype of [Dtype.UNSPECIFIED, Dtype.F32]) {
      const answers = client.generate({ prompt: "hi", activationDtype, requestId: "ok" });
      for await (const r of answers) {
        assertEquals(r.requestId, "ok");
        break;
      }
    }
  } finally {
    t.close();
    await server.close();
  }
});

Deno.test("Forward watches the sender of a stream only when it is a member", () => {
  const watched: string[] = [];
  const head = {
    lostSignal: (id: string) => {
      watched.push(id);
      return new AbortController().signal;
    },
  } as unknown as HeadService;
  const s = {
    nodeId: "a",
    gossip: { member: (id: string) => (id === "b" ? { id } : undefined) },
    config: { prefillChunk: 64 },
  } as unknown as AgentState;
  const ctx = forwardContext(s, head, {} as PlacementLoop, {} as AgentMetrics);
  assert(ctx.lost?.("b"), "a member's loss is watched");
  // A sender no member is: nothing to watch (a signal kept per made-up sender grew the peers'
  // table without bound).
  assertEquals(ctx.lost?.("made-up-1"), undefined);
  assertEquals(watched, ["b"]);
});

Deno.test("Forward while draining: a session of a request this agent heads is let in, another head's refused", () => {
  const s = {
    nodeId: "a",
    draining: false,
    requests: new Map([["req-1.x", new AbortController()]]),
    gossip: { member: () => undefined },
    config: { prefillChunk: 64 },
  } as unknown as AgentState;
  const ctx = forwardContext(s, {} as HeadService, {} as PlacementLoop, {} as AgentMetrics);
  const own = headSessionId("req-1.x", "0badf00d", 1, 2);
  assertEquals(ctx.draining?.(own), false, "not draining: nothing is refused");
  assertEquals(ctx.draining?.("other.0badf00d.0.0"), false);
  s.draining = true;
  // Before, every opening was refused: a retry or replay of this agent's own request whose chain
  // reaches its stage through another agent's then excluded its layers and waited for another
  // host of them, while the drain waited for that request.
  assertEquals(ctx.draining?.(own), false, "its own request's session");
  assertEquals(ctx.draining?.("other.0badf00d.0.0"), true, "another head's request");
  assertEquals(ctx.draining?.("req-1.x"), true, "a session id no head made");
  assertEquals(ctx.draining?.("bench-session"), true);
});

Deno.test("a Generate turn with a role OpenAI does not have is refused, as the HTTP API refuses it", async () => {
  const { server } = await serve();
  const t = await createRpcTransport(`127.0.0.1:${server.port}`, { gzip: false });
  try {
    const client = createClient(InferenceService, t);
    const e = await (async () => {
      // Bounded: the test server holds no model, so an accepted request would wait for one.
      for await (
        const _ of client.generate({ messages: [{ role: "bogus", content: "hi" }] }, {
          signal: AbortSignal.timeout(5000),
        })
      );
    })().then(() => null, (e) => e);
    // Before, "bogus" went into the template as a speaker.
    assert(e instanceof ConnectError && e.code === Code.InvalidArgument, String(e));
    assert(e.rawMessage.includes('messages[0].role "bogus" is not one of system'), e.rawMessage);
  } finally {
    t.close();
    await server.close();
  }
});
