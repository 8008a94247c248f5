/**
 * HeadService.generate when the model is replaced or undeployed under a running request (models
 * deploy, models undeploy): its tokens stay the admitted model's, and once its stages are gone it
 * fails at once as unavailable, saying what happened, instead of waiting out the recovery timeout
 * for layers no agent will load again.
 */
import { HeadService } from "../../../cluster/agent/head_service.ts";
import { loadModelIndex, type ServedModel } from "../../../cluster/agent/served_model.ts";
import { Peers } from "../../../cluster/agent/peers.ts";
import type { AgentState } from "../../../cluster/agent/state.ts";
import type { PlacementLoop } from "../../../cluster/agent/placement_loop.ts";
import type { AgentMetrics } from "../../../cluster/telemetry/mod.ts";
import { resolveConfig } from "../../../cluster/agent_config.ts";
import { Admission } from "../../../cluster/api/mod.ts";
import { EventHub } from "../../../cluster/events/mod.ts";
import { type StageCandidate, StageHost } from "../../../cluster/pipeline/mod.ts";
import { ModelId } from "../../../cluster/model_id.ts";
import { createReferenceBackend } from "../../../kernels/reference/mod.ts";
import { LlamaStage } from "../../../model/llama.ts";
import { FIXTURES } from "../../support/paths.ts";
import { assert, assertEquals } from "../../support/assert.ts";

const STORIES = `${FIXTURES}/models/stories260K.gguf`;

/** A head whose own in-process stage holds all of `model`, announced while `announced` says. */
async function soloHead(model: ServedModel) {
  const config = resolveConfig([["default", { memoryBudget: "1GB", contextSize: 256 }]]);
  const host = new StageHost(
    await LlamaStage.load(model.file, createReferenceBackend(), {}),
    model.id.toString(),
  );
  const state = {
    config,
    nodeId: "h",
    model,
    stage: host,
    admission: new Admission(4, 4),
    requests: new Map<string, AbortController>(),
    draining: false,
    counters: { activeRequests: 0, tokensGeneratedTotal: 0, recoveries: 0 },
    events: new EventHub({ history: 16 }),
    log: () => {},
    gossip: { probeNow: () => {}, member: () => undefined },
  } as unknown as AgentState;
  const announced = { on: true };
  const loop = {
    epoch: 0n,
    stageCandidates: (): StageCandidate[] =>
      announced.on && state.stage
        ? [{ id: "h", status: "alive", model: state.stage.model, from: 0, to: model.nLayers }]
        : [],
  } as unknown as PlacementLoop;
  const metrics = new Proxy({}, { get: () => () => {} }) as AgentMetrics;
  const peers = new Peers(config);
  const service = new HeadService(state, loop, peers, metrics);
  return { service, state, host, announced, close: () => peers.closeAll() };
}

Deno.test("a request whose model is replaced mid-answer keeps its vocabulary, and fails at once when its stage is gone", async () => {
  const before = await loadModelIndex(STORIES, 256, 4);
  const h = await soloHead(before);
  // The next model: another file name, so the message can name both.
  const after = { ...before, id: ModelId.of("other.gguf", 1, "x") } as ServedModel;
  try {
    const seen: ServedModel[] = [];
    let failedAt = 0;
    const err = await (async () => {
      for await (
        const e of h.service.generate(
          { prompt: "Once upon a time", maxTokens: 200, sampling: { temperature: 0 } },
          new AbortController().signal,
        )
      ) {
        seen.push(e.model);
        if (seen.length === 5) {
          // models deploy: the agent serves the next model, the old stage stops being
          // announced, and (its retire time out) closes the sessions open on it.
          h.state.model = after;
          h.announced.on = false;
          h.state.stage = undefined;
          h.host.closeAll();
          failedAt = performance.now();
        }
      }
      return null;
    })().catch((e) => e);
    assert(err, "the request went on without its stage");
    assertEquals((err as { rpcCode?: string }).rpcCode, "unavailable", `${err}`);
    const msg = (err as Error).message;
    assert(
      msg.includes("model stories260K.gguf was replaced by other.gguf (llmctl models deploy)"),
      msg,
    );
    // Before: the head waited its 30 s recovery timeout for stories260K's layers, then said
    // "no live agent (start more agents, or raise --memory-budget)".
    assert(performance.now() - failedAt < 3000, `failed after ${performance.now() - failedAt} ms`);
    assert(seen.length >= 5 && seen.every((m) => m === before), "every token is the old model's");
  } finally {
    h.close();
    before.file.close();
  }
});

Deno.test("a request whose model is undeployed once its stage is gone fails at once, saying so", async () => {
  const before = await loadModelIndex(STORIES, 256, 4);
  const h = await soloHead(before);
  try {
    let failedAt = 0;
    let n = 0;
    const err = await (async () => {
      for await (
        const _ of h.service.generate(
          { prompt: "Once upon a time", maxTokens: 200, sampling: { temperature: 0 } },
          new AbortController().signal,
        )
      ) {
        if (++n === 3) {
          h.state.model = undefined;
          h.announced.on = false;
          h.state.stage = undefined;
          h.host.closeAll();
          failedAt = performance.now();
        }
      }
      return null;
    })().catch((e) => e);
    assertEquals((err as { rpcCode?: string })?.rpcCode, "unavailable", `${err}`);
    assert(
      /model stories260K.gguf was undeployed \(llmctl models undeploy\)/.test(err.message),
      err.message,
    );
    assert(performance.now() - failedAt < 3000, `failed after ${performance.now() - failedAt} ms`);
  } finally {
    h.close();
    before.file.close();
  }
});
