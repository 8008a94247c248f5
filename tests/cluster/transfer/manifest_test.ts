/** Manifests from peers: a malformed one is refused before anything loops or allocates on it. */
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { TransferManifestSchema } from "../../../proto/mod.ts";
import {
  computeManifest,
  ManifestError,
  openManifest,
  signedManifest,
} from "../../../cluster/transfer/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";
import { STORIES } from "./stories_fixture.ts";

Deno.test("a malformed manifest is refused with what is wrong; a sound one opens", async () => {
  const { bytes } = await computeManifest(STORIES, { nodeId: "a", chunkSize: 4096 });
  assertEquals(
    openManifest(signedManifest(bytes, undefined, []), undefined).manifest.chunkSize,
    4096,
  );
  const cases: [string, (m: ReturnType<typeof decode>) => void][] = [
    // A chunk size of 1 over the file's length: millions of entries to track.
    ["chunk size 1 is outside", (m) => void (m.chunkSize = 1)],
    ["chunk size 0 is outside", (m) => void (m.chunkSize = 0)],
    ["ends past the file's", (m) => void (m.segments[1].length = 1n << 50n)],
    ["chunk hashes for", (m) => void m.segments[1].chunkSha256.pop()],
    ["has no segments", (m) => void (m.segments = [])],
    ["sha256 is not 64 hex digits", (m) => void (m.sha256 = "../../etc")],
    ["not 32 bytes", (m) => void (m.segments[0].sha256 = new Uint8Array(3))],
  ];
  for (const [says, spoil] of cases) {
    const m = decode(bytes);
    spoil(m);
    const answer = signedManifest(toBinary(TransferManifestSchema, m), undefined, []);
    let err: unknown;
    try {
      openManifest(answer, undefined);
    } catch (e) {
      err = e;
    }
    assert(err instanceof ManifestError, `${says}: expected ManifestError, got ${err}`);
    assert(err.message.includes(says) && err.message.includes("malformed"), err.message);
  }
});

function decode(bytes: Uint8Array) {
  return fromBinary(TransferManifestSchema, bytes);
}
