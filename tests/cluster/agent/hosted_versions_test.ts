// Which announcement of a stage a head excludes a failure by: load publications and a gossip
// revival of a dead process keep it; a new range, backend or life (restart, comeback) change it.
import { assert, assertEquals } from "../../support/assert.ts";
import { HostedVersions } from "../../../cluster/agent/hosted_versions.ts";
import { emptyMetadata, type Member, type NodeMetadata } from "../../../cluster/gossip/mod.ts";

function member(
  incarnation: number,
  over: Partial<NodeMetadata> = {},
  status: Member["status"] = "alive",
): Member {
  const meta: NodeMetadata = {
    ...emptyMetadata("a"),
    hosted: { model: "m.gguf@1", from: 0, to: 4 },
    replica: "a",
    life: "n0nce.0",
    ...over,
  };
  return { id: "a", addr: "127.0.0.1:7946", incarnation, status, meta } as Member;
}

Deno.test("hosted versions: load publications keep the announcement; a dead stage revived by a late copy keeps it too", () => {
  const v = new HostedVersions();
  const first = v.of(member(5));
  assertEquals(first, 5);
  const load = { sessions: 1, queued: 0, free: 3, tokensPerSecond: 12 };
  assertEquals(v.of(member(6, { load })), first, "a load figure is not a new stage");
  // Killed after publishing incarnation 7: a peer declares it dead at 6 and a copy of 7 still
  // in the others' queues revives it (SWIM's "join"). Same process, same life: still excluded.
  assertEquals(v.of(member(6, {}, "dead")), first);
  assertEquals(v.of(member(7, { load }, "alive")), first, "a revival is not a new stage");
});

Deno.test("hosted versions: a new range, backend or life is a new announcement; none announced forgets", () => {
  const v = new HostedVersions();
  const first = v.of(member(5))!;
  const moved = v.of(member(6, { hosted: { model: "m.gguf@1", from: 0, to: 6 } }))!;
  assert(moved !== first, "new layers: a new announcement");
  const comeback = v.of(
    member(9, { hosted: { model: "m.gguf@1", from: 0, to: 6 }, life: "n0nce.1" }),
  );
  assertEquals(comeback, 9, "a false death refuted: a new life");
  const restart = v.of(
    member(12, { hosted: { model: "m.gguf@1", from: 0, to: 6 }, life: "other.0" }),
  );
  assertEquals(restart, 12, "a restarted process: a new life");
  assertEquals(v.of(member(13, { hosted: null })), undefined);
  assertEquals(
    v.of(member(14, { hosted: { model: "m.gguf@1", from: 0, to: 6 }, life: "other.0" })),
    14,
  );
});
