/** Where an agent started with --no-model forwards a request (cluster/agent/forward_target.ts). */
import type { Member } from "../../../cluster/gossip/mod.ts";
import type { StageLoad } from "../../../cluster/gossip/metadata.ts";
import {
  chooseTarget,
  ForwardTargets,
  servingMembers,
} from "../../../cluster/agent/forward_target.ts";
import { assertEquals } from "../../support/assert.ts";

const STORIES = "stories260K.gguf@1185376#abc";

function member(
  id: string,
  over: {
    status?: Member["status"];
    model?: string;
    load?: Partial<StageLoad>;
    httpPort?: number;
    stageError?: string;
  } = {},
): Member {
  return {
    id,
    addr: `10.0.0.1:${id.length}`,
    status: over.status ?? "alive",
    incarnation: 1,
    metaBytes: new Uint8Array(),
    meta: {
      id,
      addresses: ["10.0.0.1"],
      rpcPort: 7950,
      metricsPort: 9090,
      httpPort: over.httpPort ?? 8080,
      resources: { memoryBytes: 1, cores: 1, backend: "wasm", adapter: "" },
      hosted: null,
      version: "test",
      model: over.model ?? STORIES,
      stageError: over.stageError,
      load: over.load
        ? { sessions: 0, queued: 0, free: 8, tokensPerSecond: 0, ...over.load }
        : undefined,
    },
  };
}

Deno.test("only live members that serve a model are targets; a suspect, dead or failed one is not", () => {
  const members = [
    member("gw", { model: "" }),
    member("sus", { status: "suspect" }),
    member("dead", { status: "dead" }),
    member("broken", { stageError: "out of memory" }),
    member("ok"),
  ];
  assertEquals(servingMembers(members, "").map((m) => m.id), ["ok"]);
  assertEquals(chooseTarget(members, "stories260K")?.id, "ok");
  // Never itself, nor one that already failed the request.
  assertEquals(chooseTarget(members, "", { exclude: new Set(["ok"]) }), undefined);
});

Deno.test("the name a client sends picks the members serving it, by every name the head takes", () => {
  const members = [member("s", { model: STORIES }), member("t", { model: "tiny.gguf@99" })];
  for (const name of ["stories260K", "stories260K.gguf", STORIES, "stories260K.gguf@1185376"]) {
    assertEquals(chooseTarget(members, name)?.id, "s", name);
  }
  assertEquals(chooseTarget(members, "tiny")?.id, "t");
  // A name nobody serves still goes somewhere: that agent answers NOT_FOUND naming its model.
  assertEquals(servingMembers(members, "llama-70b").map((m) => m.id), ["s", "t"]);
});

Deno.test("the target with a free slot and the least load wins; then the most free slots", () => {
  const members = [
    member("full", { load: { free: 0, sessions: 0 } }),
    member("busy", { load: { free: 4, sessions: 3, queued: 2 } }),
    member("idle", { load: { free: 2, sessions: 1 } }),
    member("roomy", { load: { free: 6, sessions: 1 } }),
  ];
  assertEquals(chooseTarget(members, "")?.id, "roomy");
  // What this agent already sent counts on top of the published load.
  const inFlight = (id: string) => (id === "roomy" ? 3 : 0);
  assertEquals(chooseTarget(members, "", { inFlight })?.id, "idle");
  // Only members with an HTTP API, for the OpenAI proxy.
  const http = [member("rpc-only", { httpPort: 0 }), member("api", { load: { sessions: 5 } })];
  assertEquals(chooseTarget(http, "", { http: true })?.id, "api");
  assertEquals(chooseTarget([member("rpc-only", { httpPort: 0 })], "", { http: true }), undefined);
});

Deno.test("equally loaded targets take turns, and open requests spread the load", () => {
  const members = [member("a"), member("b"), member("c"), member("gw", { model: "" })];
  const targets = new ForwardTargets("gw", () => members);
  // One after another (each ended before the next): round robin, not always the same one.
  const picks = Array.from({ length: 6 }, () => targets.choose("")!.id);
  assertEquals(picks, ["a", "b", "c", "a", "b", "c"]);
  // Held open: each goes to the member with the fewest of this agent's requests.
  const open = [];
  const held: string[] = [];
  for (let i = 0; i < 6; i++) {
    const m = targets.choose("")!;
    held.push(m.id);
    open.push(targets.open(m.id));
  }
  assertEquals(held.sort(), ["a", "a", "b", "b", "c", "c"]);
  for (const end of open) end();
  // Never itself; untrusted members and the ones a request already failed on are left out.
  const wary = new ForwardTargets("a", () => members, new Map([["b", "unknown ca"]]));
  assertEquals(wary.choose("")?.id, "c");
  assertEquals(wary.choose("", new Set(["c"])), undefined);
  assertEquals(wary.any(), true);
  assertEquals(new ForwardTargets("a", () => [member("a")]).any(), false);
});
