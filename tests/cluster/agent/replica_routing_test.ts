/**
 * Replicas in the agent, without processes: the replica count members agree on, the epoch of a
 * replica plan, the gossip fields replicas travel in, the plan computed from members' metadata
 * (placementInputs), and the head's choice of replica under load.
 */
import {
  agreedReplicaCount,
  type ModelFootprint,
  planEpoch,
  planReplicas,
  replicaCountFromWire,
  replicaCountToWire,
  replicaEpoch,
  stageBytes,
} from "../../../cluster/placement/mod.ts";
import { decodeMetadata, encodeMetadata, type Member } from "../../../cluster/gossip/mod.ts";
import {
  chooseReplica,
  GossipChainProvider,
  Head,
  preferPrefix,
  PrefixRoutes,
  ReplicaLedger,
  type ReplicaRoute,
  replicaRoutes,
  StageBusyError,
  type StageCandidate,
  type StageLink,
} from "../../../cluster/pipeline/mod.ts";
import {
  agreedReplicas,
  modelMembers,
  placementInputs,
} from "../../../cluster/agent/placement_loop.ts";
import { PREFIX_CACHE_BLOCK_TOKENS } from "../../../model/prefix_cache.ts";
import { assert, assertEquals } from "../../support/assert.ts";

const model: ModelFootprint = {
  nLayers: 8,
  layerBytes: new Array(8).fill(100),
  headBytes: 50,
  tailBytes: 60,
  kvBytesPerLayer: 10,
};
const HALF = stageBytes(model, 0, 4) + 10;

Deno.test("replicas: the cluster runs the fewest any member asks for", () => {
  assertEquals(agreedReplicaCount(["auto", "auto"]), "auto");
  assertEquals(agreedReplicaCount(["auto", 3, 2]), 2);
  assertEquals(agreedReplicaCount([4, "auto"]), 4);
  assertEquals(agreedReplicaCount([]), 1);
  // An agent that predates replicas publishes nothing: it counts as 1, so it is never outvoted.
  assertEquals(replicaCountFromWire(undefined), 1);
  assertEquals(agreedReplicaCount(["auto", replicaCountFromWire(undefined)]), 1);
  for (const c of ["auto", 1, 7] as const) {
    assertEquals(replicaCountFromWire(replicaCountToWire(c)), c);
  }
});

Deno.test("replicas: one replica keeps the epoch of before; a change to any replica changes it", () => {
  const one = planReplicas(model, nodeList(4, HALF), 1);
  assertEquals(replicaEpoch(one, "m@1"), planEpoch(one.replicas[0], "m@1"));
  const two = planReplicas(model, nodeList(4, HALF), "auto");
  assertEquals(two.replicas.length, 2);
  const other = planReplicas(model, nodeList(5, HALF), "auto");
  assertEquals(other.replicas.length, 2, "the fifth node is a standby");
  assertEquals(replicaEpoch(two, "m@1"), replicaEpoch(other, "m@1"), "a standby is not a stage");
  const moved = planReplicas(model, nodeList(4, HALF).filter((n) => n.id !== "n3"), "auto");
  assert(replicaEpoch(two, "m@1") !== replicaEpoch(moved, "m@1"));
  assert(replicaEpoch(two, "m@1") !== replicaEpoch(two, "m@2"));
});

function nodeList(n: number, budget: number) {
  return Array.from({ length: n }, (_, i) => ({ id: `n${i}`, memoryBudget: budget, speed: 1 }));
}

/** A member as gossip delivers it: metadata encoded and decoded as on the wire. */
function member(
  id: string,
  budget: number,
  extra: { replicas?: number; hosted?: [number, number]; replica?: string } = {},
): Member {
  const meta = decodeMetadata(encodeMetadata({
    id,
    addresses: ["127.0.0.1"],
    rpcPort: 1,
    metricsPort: 2,
    resources: { memoryBytes: budget, cores: 2, backend: "wasm", adapter: "", speed: 1 },
    hosted: extra.hosted ? { model: "m@1", from: extra.hosted[0], to: extra.hosted[1] } : null,
    version: "0",
    model: "m@1",
    replicas: extra.replicas,
    replica: extra.replica,
  }));
  return { id, meta, status: "alive", incarnation: 1 } as unknown as Member;
}

Deno.test("replicas: gossip carries the setting, the replica and the load; old metadata reads as 1", () => {
  const load = { sessions: 3, queued: 2, free: 5, tokensPerSecond: 123.4 };
  const m = decodeMetadata(encodeMetadata({
    ...member("a", 1).meta!,
    replicas: 0,
    replica: "a",
    load,
  }));
  assertEquals([m.replicas, m.replica, m.load], [0, "a", load]);
  const old = decodeMetadata(encodeMetadata({ ...member("b", 1).meta!, replicas: undefined }));
  assertEquals(old.replicas, undefined);
  assertEquals(agreedReplicas([{ ...member("b", 1), meta: old } as Member]), 1);
});

Deno.test("replicas: every agent plans the same from gossip, and the plan is a fixed point", () => {
  const members = ["d", "a", "c", "b"].map((id) => member(id, HALF, { replicas: 0 }));
  assertEquals(agreedReplicas(members), "auto");
  const plan = planReplicas(model, placementInputs(members, "m@1"), agreedReplicas(members));
  assertEquals(plan.replicas.length, 2);
  // Another agent lists the members in another order: the same plan.
  const again = planReplicas(model, placementInputs([...members].reverse(), "m@1"), "auto");
  assertEquals(replicaEpoch(again, "m@1"), replicaEpoch(plan, "m@1"));
  // Once every node announces what the plan gave it, planning again changes nothing.
  const loaded = members.map((m) => {
    const r = plan.replicas.find((r) => r.stages.some((s) => s.nodeId === m.id))!;
    const s = r.stages.find((s) => s.nodeId === m.id)!;
    return member(m.id, HALF, { replicas: 0, hosted: [s.from, s.to], replica: r.stages[0].nodeId });
  });
  const inputs = placementInputs(loaded, "m@1");
  assert(inputs.every((n) => n.hosting), "hosting is read from the metadata");
  assertEquals(
    replicaEpoch(planReplicas(model, inputs, "auto"), "m@1"),
    replicaEpoch(plan, "m@1"),
  );
  // Losing one node of a replica: the other replica stays exactly where it was.
  const victim = plan.replicas[1].stages[0].nodeId;
  const after = planReplicas(
    model,
    placementInputs(loaded.filter((m) => m.id !== victim), "m@1"),
    "auto",
  );
  assertEquals(after.replicas.length, 1);
  assertEquals(after.replicas[0], plan.replicas[0]);
  // Hosting of another model is not this model's.
  assert(placementInputs(loaded, "other@2").every((n) => !n.hosting));
});

const route = (id: string, sessions: number, free = 8, tps = 0, queued = 0): ReplicaRoute => ({
  id,
  chain: [],
  load: { sessions, queued, free, tokensPerSecond: tps },
  loadVersion: 1,
});

Deno.test("routing: the replica with the most free capacity wins", () => {
  assertEquals(chooseReplica([]), undefined);
  assertEquals(chooseReplica([route("a", 3), route("b", 1)])!.id, "b", "fewer sessions");
  assertEquals(chooseReplica([route("a", 1, 8, 0, 4), route("b", 3)])!.id, "b", "queued counts");
  assertEquals(chooseReplica([route("a", 1, 0), route("b", 6, 2)])!.id, "b", "a full one last");
  assertEquals(chooseReplica([route("a", 2, 8, 50), route("b", 2, 8, 90)])!.id, "b", "faster");
  assertEquals(chooseReplica([route("b", 2), route("a", 2)])!.id, "a", "ties go to the lowest id");
  // Heads that each route a request before the next load publication spread them: each breaks
  // ties in its own order (before, every head sent its request to the lowest id).
  const tied = ["r1", "r2", "r3"].map((id) => route(id, 0));
  const picks = new Set(
    Array.from({ length: 12 }, (_, i) => chooseReplica(tied, () => 0, `head-${i}`)!.id),
  );
  assertEquals(picks.size, 3, `12 heads chose ${[...picks]}`);
  // A head's order is its own and stable.
  assertEquals(chooseReplica(tied, () => 0, "h")!.id, chooseReplica(tied, () => 0, "h")!.id);
});

/** A whole-model stage of replica routes' chains, alive or suspect. */
const stage = (id: string, status: "alive" | "suspect"): StageCandidate => ({
  id,
  status,
  model: "m",
  from: 0,
  to: 8,
});

Deno.test("routing: a replica with a suspect stage is chosen only when no whole one has room", () => {
  const frozen = { ...route("a", 0), chain: [stage("a", "alive"), stage("a2", "suspect")] };
  const busier = { ...route("b", 5, 3, 90), chain: [stage("b", "alive")] };
  // The frozen replica's last load says it is idle: without the suspicion it would win.
  assertEquals(chooseReplica([frozen, busier])!.id, "b");
  for (const head of ["h1", "h2", "h3", "h4"]) {
    assertEquals(
      chooseReplica([frozen, { ...busier, load: { ...busier.load, sessions: 0 } }], () => 0, head)!
        .id,
      "b",
      head,
    );
  }
  // A full whole replica would refuse the request; the suspect one may still answer.
  assertEquals(chooseReplica([frozen, { ...busier, load: { ...busier.load, free: 0 } }])!.id, "a");
});

Deno.test("routing: requests sent since the last load publication spread a burst evenly", () => {
  const ledger = new ReplicaLedger();
  const routes = [route("a", 0), route("b", 0), route("c", 0)];
  const sent: Record<string, number> = {};
  // 64 requests arrive before any stage publishes a new load: the published figures say 0.
  for (let i = 0; i < 64; i++) {
    const r = chooseReplica(routes, (x) => ledger.pending(x))!;
    ledger.start(r.id);
    sent[r.id] = (sent[r.id] ?? 0) + 1;
  }
  assertEquals(sent, { a: 22, b: 21, c: 21 });
  // A publication that counts them: the ledger rebases instead of counting them twice.
  const published = [route("a", 22), route("b", 21), route("c", 21)].map((r) => ({
    ...r,
    loadVersion: 2,
  }));
  assertEquals(published.map((r) => ledger.pending(r)), [0, 0, 0]);
  for (let i = 0; i < 10; i++) ledger.end("a");
  assertEquals(chooseReplica(published, (x) => ledger.pending(x))!.id, "a");
  assertEquals(ledger.snapshot(), { a: 12, b: 21, c: 21 });
});

const cand = (
  id: string,
  from: number,
  to: number,
  replica?: string,
  sessions = 0,
): StageCandidate => ({
  id,
  status: "alive",
  model: "m@1",
  from,
  to,
  version: 1,
  replica,
  load: { sessions, queued: 0, free: 8, tokensPerSecond: 0 },
  loadVersion: 1,
});

Deno.test("routing: chains never mix replicas; an incomplete replica is not a route", () => {
  const cands = [
    cand("a", 0, 4, "a", 5),
    cand("b", 4, 8, "a"),
    cand("c", 0, 4, "c", 1),
    cand("d", 4, 8, "c"),
    cand("e", 0, 8, "e", 9),
  ];
  const routes = replicaRoutes(cands, "m@1", 8, new Set());
  assertEquals(routes.map((r) => [r.id, r.chain.map((c) => c.id)]), [
    ["a", ["a", "b"]],
    ["c", ["c", "d"]],
    ["e", ["e"]],
  ]);
  assertEquals(
    routes.map((r) => r.load.sessions),
    [5, 1, 9],
    "a replica's load is its first stage's",
  );
  // d failed: replica c is no route until d is back; a is.
  const left = replicaRoutes(cands, "m@1", 8, new Set(["d@1"]));
  assertEquals(left.map((r) => r.id), ["a", "e"]);
});

Deno.test("routing: a request sticks to its replica and moves only when it lost a stage", async () => {
  const cands = [cand("a", 0, 4, "a", 2), cand("b", 4, 8, "a"), cand("c", 0, 8, "c", 0)];
  const ledger = new ReplicaLedger();
  const link = (c: StageCandidate) => ({ nodeId: c.id, from: c.from, to: c.to }) as StageLink;
  const provider = new GossipChainProvider({
    model: "m@1",
    nLayers: 8,
    candidates: () => cands,
    link,
    ledger,
  });
  const ids = async (exclude: string[] = []) =>
    (await provider.chain({ exclude: new Set(exclude), timeoutMs: 0 })).map((l) => l.nodeId);
  assertEquals(await ids(), ["c"], "c is idle");
  assertEquals(provider.replica, "c");
  cands[2] = { ...cands[2], load: { sessions: 9, queued: 0, free: 8, tokensPerSecond: 0 } };
  assertEquals(await ids(), ["c"], "sticky although c became busier");
  assertEquals(ledger.snapshot(), { c: 1 });
  assertEquals(await ids(["c@1"]), ["a", "b"], "a replay moves to the other replica");
  assertEquals(ledger.snapshot(), { a: 1 });
  provider.release();
  assertEquals(ledger.snapshot(), {});
  // Stages that announce no replica (agents that predate replicas) still tile a chain.
  const plain = new GossipChainProvider({
    model: "m@1",
    nLayers: 8,
    candidates: () => [cand("x", 0, 3), cand("y", 3, 8)],
    link,
    ledger,
  });
  assertEquals(
    (await plain.chain({ exclude: new Set(), timeoutMs: 0 })).map((l) => l.nodeId),
    ["x", "y"],
  );
});

Deno.test("placement plans over alive members offering the model, trusted", () => {
  const m = (id: string, status: Member["status"], model = "m@1"): Member => ({
    id,
    addr: "127.0.0.1:1",
    status,
    incarnation: 1,
    meta: {
      id,
      addresses: [],
      rpcPort: 1,
      metricsPort: 1,
      resources: { memoryBytes: HALF, cores: 1, backend: "wasm", adapter: "" },
      hosted: null,
      version: "",
      model,
    },
    metaBytes: new Uint8Array(),
  });
  const members = [m("a", "alive"), m("b", "suspect"), m("c", "dead"), m("d", "alive", "x@2")];
  assertEquals(modelMembers(members, "m@1", new Set()).map((x) => x.id), ["a"]);
  assertEquals(modelMembers(members, "m@1", new Set(["a"])).map((x) => x.id), []);
});

Deno.test("routing: a replica that answers full sends the request to another with room, not back to the client", async () => {
  // Replica a looks idle in the load it last published but is full now (other heads' sessions
  // since); replica c has room. Before, a new request went to a, got RESOURCE_EXHAUSTED and
  // passed it on as a 429, and a replay waited on a for its whole recovery timeout.
  const cands = [cand("a", 0, 8, "a", 0), cand("c", 0, 8, "c", 3)];
  const opened: string[] = [];
  const link = (c: StageCandidate): StageLink => ({
    nodeId: c.id,
    from: c.from,
    to: c.to,
    openSession: () => {
      opened.push(c.id);
      if (c.id === "a") return Promise.reject(new StageBusyError(`${c.id} is full`, c.id));
      let n = 0;
      return Promise.resolve({
        step: () =>
          Promise.resolve({
            kind: "token" as const,
            token: { id: 10 + n++, logprob: 0, top: [] },
            computeMs: 0,
          }),
        close: () => Promise.resolve(),
        cachedTokens: 0,
      });
    },
  });
  const ledger = new ReplicaLedger();
  const provider = () =>
    new GossipChainProvider({ model: "m@1", nLayers: 8, candidates: () => cands, link, ledger });
  const request = {
    requestId: "r",
    maxTokens: 3,
    sampling: {},
    maxContext: 64,
    isEog: () => false,
  };
  const got = await new Head(provider()).generate({ ...request, promptTokens: [1, 2, 3] });
  assertEquals(got.tokens.map((t) => t.id), [10, 11, 12]);
  assertEquals(opened, ["a", "c"], "tried a, then c");
  assertEquals(ledger.snapshot(), { c: 1 }, "a no longer counts the request");
  // Every replica full: the head waits for room, trying again, and once its recovery timeout
  // has passed the client hears the refusal (before, at once: a 429, or an error inside a
  // stream already answered 200, for a request its head had admitted).
  cands[1] = cand("c2", 0, 8, "c2", 0);
  const full = link;
  let tries = 0;
  let roomAfter = Infinity;
  const allFull = (c: StageCandidate): StageLink => ({
    ...full(c),
    openSession: () =>
      ++tries > roomAfter
        ? full({ ...c, id: "c" }).openSession({} as never)
        : Promise.reject(new StageBusyError(`${c.id} is full`, c.id)),
  });
  const head = () =>
    new Head(
      new GossipChainProvider({
        model: "m@1",
        nLayers: 8,
        candidates: () => cands,
        link: allFull,
        ledger: new ReplicaLedger(),
      }),
      { recoveryTimeoutMs: 400 },
    );
  const t0 = performance.now();
  const e = await head().generate({ ...request, promptTokens: [1, 2, 3] }).then(
    () => null,
    (e) => e,
  );
  assert(e instanceof StageBusyError, String(e));
  assert(performance.now() - t0 >= 400 && tries > 3, `gave up after ${tries} tries`);
  // Room comes (a session elsewhere ended): the waiting request runs.
  tries = 0;
  roomAfter = 4;
  const waited = await head().generate({ ...request, promptTokens: [1, 2, 3] });
  assertEquals(waited.tokens.length, 3);
});

Deno.test("routing: a prompt goes back to the replica that served its prefix, unless that one is much busier", () => {
  const idle = route("b", 0);
  // A few more sessions than the idlest: the cached prefix wins.
  assert(preferPrefix(route("a", 2), idle));
  assert(preferPrefix(route("a", 6), route("b", 4)), "up to half the idlest's load more");
  // Past the margin, full, or with a suspect stage: load wins.
  assert(!preferPrefix(route("a", 3), idle));
  assert(!preferPrefix(route("a", 7), route("b", 4)));
  assert(!preferPrefix(route("a", 0, 0), idle), "no free slot");
  assert(!preferPrefix({ ...route("a", 0), chain: [stage("a", "suspect")] }, idle));
  // What this head sent since the last publication counts as load.
  assert(!preferPrefix(route("a", 1), idle, (r) => (r.id === "a" ? 2 : 0)));
});

Deno.test("routing: the provider sends a chat's next turn to the replica its history went to", async () => {
  const cands = [cand("a", 0, 8, "a", 0), cand("b", 0, 8, "b", 0)];
  const ledger = new ReplicaLedger();
  const routes = new PrefixRoutes();
  const link = (c: StageCandidate) => ({ nodeId: c.id, from: c.from, to: c.to }) as StageLink;
  const B = PREFIX_CACHE_BLOCK_TOKENS;
  const history = Array.from({ length: 3 * B }, (_, i) => i + 1);
  const provider = (ids: number[]) =>
    new GossipChainProvider({
      model: "m@1",
      nLayers: 8,
      candidates: () => cands,
      link,
      ledger,
      head: "h",
      prefix: { routes, ids },
    });
  const first = provider(history);
  const [x] = (await first.chain({ exclude: new Set(), timeoutMs: 0 })).map((l) => l.nodeId);
  assertEquals(first.prefixTokens, 0, "nothing recorded yet: load chose");
  first.release();
  const other = x === "a" ? "b" : "a";
  // x now runs two sessions more than the other replica; the next turn still goes to x.
  const i = cands.findIndex((c) => c.id === x);
  cands[i] = { ...cands[i], load: { sessions: 2, queued: 0, free: 8, tokensPerSecond: 0 } };
  const turn = provider([...history, 500, 501, 502]);
  assertEquals((await turn.chain({ exclude: new Set(), timeoutMs: 0 }))[0].nodeId, x);
  assertEquals(turn.prefixTokens, 3 * B);
  // A sticky re-read is no new prefix route.
  await turn.chain({ exclude: new Set(), timeoutMs: 0 });
  assertEquals(turn.prefixTokens, 0);
  turn.release();
  // Much busier: load wins, and the prefix now points where it went.
  cands[i] = { ...cands[i], load: { sessions: 5, queued: 0, free: 8, tokensPerSecond: 0 } };
  const busy = provider([...history, 600]);
  assertEquals((await busy.chain({ exclude: new Set(), timeoutMs: 0 }))[0].nodeId, other);
  assertEquals(busy.prefixTokens, 0);
  busy.release();
  assertEquals(routes.lookup(routes.keys(history))?.replica, other);
  // Without a prefix record (an agent without --prefix-cache): load alone, as before.
  const plain = new GossipChainProvider({
    model: "m@1",
    nLayers: 8,
    candidates: () => cands,
    link,
  });
  assertEquals((await plain.chain({ exclude: new Set(), timeoutMs: 0 }))[0].nodeId, other);
});
