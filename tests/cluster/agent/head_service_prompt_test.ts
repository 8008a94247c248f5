/** HeadService.generate before the chain runs: when a request counts as taken. */
import { HeadService } from "../../../cluster/agent/head_service.ts";
import { Peers } from "../../../cluster/agent/peers.ts";
import type { AgentState } from "../../../cluster/agent/state.ts";
import type { PlacementLoop } from "../../../cluster/agent/placement_loop.ts";
import type { AgentMetrics } from "../../../cluster/telemetry/mod.ts";
import { resolveConfig } from "../../../cluster/agent_config.ts";
import { Admission } from "../../../cluster/api/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";

/** A head over `model` whose one slot is held by another generation. */
async function busyHead(model: Record<string, unknown>) {
  const config = resolveConfig([["default", { memoryBudget: "1GB" }]]);
  const admission = new Admission(1, 4);
  const busy = await admission.acquire();
  const state = {
    nodeId: "h",
    config,
    admission,
    requests: new Map<string, AbortController>(),
    draining: false,
    model: { id: { matches: () => true, toString: () => "m@1" }, contextLength: 64, ...model },
  } as unknown as AgentState;
  const peers = new Peers(config);
  const service = new HeadService(
    state,
    { epoch: 1n } as unknown as PlacementLoop,
    peers,
    undefined as unknown as AgentMetrics,
  );
  return { service, state, admission, close: () => (busy(), peers.closeAll()) };
}

Deno.test("a request is taken (onAccepted) once it has a place in line, before its first token", async () => {
  const { service, state, admission, close } = await busyHead({ tokenizer: { vocabSize: 100 } });
  let accepted = 0;
  const first = service.generate(
    { requestId: "r", promptTokens: [1, 2, 3], sampling: {}, onAccepted: () => accepted++ },
    new AbortController().signal,
  )[Symbol.asyncIterator]().next().then(() => null, (e) => e);
  await new Promise((r) => setTimeout(r, 20));
  assertEquals(admission.stats.queued, 1);
  assertEquals(accepted, 1, "told while it waits in line");
  assert(service.cancel("r"));
  await first;
  assertEquals(state.requests.size, 0);
  close();
});
