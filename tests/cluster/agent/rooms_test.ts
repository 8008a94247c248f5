/**
 * The agent's small rooms that need no process: the model id, the placement inputs and the
 * cluster-wide placement epoch, and the gossip metadata fields NodeInfo's resources come from.
 */
import { modelFingerprint, ModelId } from "../../../cluster/model_id.ts";
import { openGGUF } from "../../../model/gguf/mod.ts";
import { editedGGUF } from "../../support/gguf_edit.ts";
import { REPO } from "../../support/paths.ts";
import { planEpoch, planPlacement } from "../../../cluster/placement/mod.ts";
import { decodeMetadata, encodeMetadata, type NodeMetadata } from "../../../cluster/gossip/mod.ts";
import { memberToNodeInfo } from "../../../cluster/discovery/gossip_view.ts";
import { stageFailures } from "../../../cluster/agent/placement_loop.ts";
import type { Member } from "../../../cluster/gossip/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";

Deno.test("ModelId: parse, print and the names clients may use", () => {
  const id = ModelId.parse("stories260K.gguf@1185376");
  assertEquals(id.file, "stories260K.gguf");
  assertEquals(id.size, 1185376);
  assertEquals(id.toString(), "stories260K.gguf@1185376");
  assertEquals(ModelId.of("/models/x/stories260K.gguf", 1185376).toString(), id.toString());
  for (const n of ["stories260K.gguf@1185376", "stories260K.gguf", "stories260K"]) {
    assert(id.matches(n), n);
  }
  for (const n of ["stories260K.gguf@1", "stories", "other.gguf"]) assert(!id.matches(n), n);
  // A file name that contains "@" keeps it: only the last "@" separates the size.
  assertEquals(ModelId.parse("a@b.gguf@12").file, "a@b.gguf");
  assertEquals(ModelId.parse("plain.gguf").size, 0);
  // With its content's fingerprint: parsed back whole, and still named by file or file@size.
  const fp = ModelId.parse("stories260K.gguf@1185376#3f9a2c61d0e4");
  assertEquals([fp.file, fp.size, fp.fingerprint], ["stories260K.gguf", 1185376, "3f9a2c61d0e4"]);
  assertEquals(fp.toString(), "stories260K.gguf@1185376#3f9a2c61d0e4");
  for (const n of ["stories260K.gguf@1185376", "stories260K", fp.toString()]) {
    assert(fp.matches(n), n);
  }
  assertEquals(ModelId.parse("a@b.gguf@12#ab").file, "a@b.gguf");
});

Deno.test("two files of the same name and size with other weights are other models", async () => {
  // A fine-tune exported again under its old name: same shapes, same size, other bytes. Before,
  // both were "name@size", and agents started from the two copies joined one pipeline.
  const original = `${REPO}/models/stories260K.gguf`;
  const tuned = await editedGGUF(original, {
    tensors: (t) =>
      t.map((x) =>
        x.name === "blk.0.attn_q.weight"
          ? { ...x, data: x.data.map((b, i) => i === 0 ? b ^ 0x40 : b) }
          : x
      ),
  });
  try {
    const ids = [];
    for (const path of [original, tuned]) {
      const file = await openGGUF(path);
      try {
        assertEquals(file.fileSize, (await Deno.stat(original)).size);
        ids.push(ModelId.of("stories260K.gguf", file.fileSize, await modelFingerprint(file)));
      } finally {
        file.close();
      }
    }
    assert(ids[0].toString() !== ids[1].toString(), ids.join(" = "));
    assertEquals(ids[0].name, ids[1].name, "clients still name both by the file");
  } finally {
    await Deno.remove(tuned);
  }
});

const footprint = {
  nLayers: 6,
  layerBytes: [10, 10, 10, 10, 10, 10],
  kvBytesPerLayer: 0,
  headBytes: 5,
  tailBytes: 5,
};

Deno.test("the placement epoch is the same for the same plan on every agent, and changes with it", () => {
  const nodes = [
    { id: "a", memoryBudget: 40, speed: 1 },
    { id: "b", memoryBudget: 40, speed: 1 },
  ];
  // Two agents see the members in different orders: the same plan, the same epoch.
  const e1 = planEpoch(planPlacement(footprint, nodes), "m@1");
  const e2 = planEpoch(planPlacement(footprint, [...nodes].reverse()), "m@1");
  assertEquals(e1, e2);
  assert(e1 > 0n && e1 <= 0xffffffffn, String(e1));
  const three = [...nodes, { id: "c", memoryBudget: 40, speed: 1 }];
  assert(planEpoch(planPlacement(footprint, three), "m@1") !== e1, "a new member");
  assert(planEpoch(planPlacement(footprint, nodes), "m@2") !== e1, "another model");
});

const meta = (resources: Partial<NodeMetadata["resources"]>, stageError = ""): NodeMetadata => ({
  id: "a",
  addresses: ["127.0.0.1"],
  rpcPort: 7950,
  metricsPort: 9090,
  httpPort: 8080,
  resources: { memoryBytes: 1e9, cores: 8, backend: "wasm", adapter: "", speed: 2, ...resources },
  hosted: { model: "m@1", from: 0, to: 3 },
  version: "0.1.0",
  model: "m@1",
  stageError,
});

Deno.test("gossip metadata carries threads and machine memory, so NodeInfo resources are filled", () => {
  const m = decodeMetadata(encodeMetadata(meta({ threads: 6, memoryTotal: 64e9 })));
  assertEquals(m.resources.threads, 6);
  assertEquals(m.resources.memoryTotal, 64e9);
  const withError = decodeMetadata(
    encodeMetadata(meta({ threads: 2, memoryTotal: 8e9 }, "layers [0,3): gone")),
  );
  assertEquals(withError.stageError, "layers [0,3): gone");
  assertEquals(withError.resources.threads, 2);
  // Metadata written without them (an older agent) still reads, as unknown.
  const old = decodeMetadata(encodeMetadata(meta({})));
  assertEquals(old.resources.threads, undefined);
  const info = memberToNodeInfo(
    {
      id: "a",
      addr: "127.0.0.1:7946",
      status: "alive",
      incarnation: 1,
      meta: m,
    } as Parameters<typeof memberToNodeInfo>[0],
  );
  assertEquals(info.resources!.threads, 6);
  assertEquals(info.resources!.memoryTotalBytes, 64_000_000_000n);
});

Deno.test("stageFailures: the live members whose stage failed to load, for the placement error", () => {
  const member = (id: string, status: Member["status"], stageError = "") =>
    ({
      id,
      status,
      incarnation: 1,
      addr: "127.0.0.1:1",
      meta: { ...meta({}, stageError), id },
    }) as unknown as Member;
  assertEquals(stageFailures([member("a", "alive")]), "");
  const text = stageFailures([
    member("a", "alive", "layers [0,5): unsupported tensor type 99"),
    member("b", "dead", "layers [0,5): gone"),
    member("c", "alive"),
  ]);
  assert(
    text.startsWith("the stage failed to load on a: layers [0,5): unsupported tensor type 99"),
    text,
  );
  assert(!text.includes(" on b"), "a dead member's failure is not news: " + text);
  const many = stageFailures(
    ["a", "b", "c", "d", "e", "f"].map((id) => member(id, "alive", "x")),
  );
  assert(many.includes("and on 2 more"), many);
});
