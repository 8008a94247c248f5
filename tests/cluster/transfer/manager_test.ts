/** TransferManager's serving side: what happens when an offered file goes away. */
import { orTimeout } from "../../../cluster/deadline.ts";
import { openManifest } from "../../../cluster/transfer/mod.ts";
import { assert } from "../../support/assert.ts";
import { STORIES, transferManager } from "./stories_fixture.ts";

Deno.test("a file deleted after it was offered answers not_found and keeps the serve permits", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/model.gguf`;
  await Deno.copyFile(STORIES, path);
  const m = transferManager("src", `${dir}/cache`, 4096);
  try {
    const { manifest } = openManifest(await m.getManifest({ path, model: "" }), undefined);
    await Deno.remove(path);
    // More streams than the manager's serve permits (8): a leaked permit per failed open
    // would leave the later ones waiting forever.
    for (let i = 0; i < 12; i++) {
      const read = (async () => {
        const chunks = [{ segment: 0, chunk: 0 }];
        for await (
          const _ of m.fetchChunks(
            { sha256: manifest.sha256, chunks },
            new AbortController().signal,
          )
        ) {
          // none expected
        }
      })();
      const e = await orTimeout(read, 2000, () => new Error(`stream ${i} still waits for a permit`))
        .then(() => null, (e) => e);
      assert(
        e && /not_found|cannot read/.test(`${e.code ?? ""} ${e.message}`),
        `stream ${i}: ${e}`,
      );
    }
  } finally {
    m.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a file rewritten in place under the same name and size is another manifest", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/model.gguf`;
  const bytes = await Deno.readFile(STORIES);
  await Deno.writeFile(path, bytes);
  const m = transferManager("src", `${dir}/cache`, 4096);
  try {
    const first = openManifest(await m.getManifest({ path, model: "" }), undefined).manifest;
    // A re-export: same name, same size, other weights (the last byte), a later mtime.
    bytes[bytes.length - 1] ^= 0xff;
    await Deno.writeFile(path, bytes);
    await Deno.utime(path, new Date(), new Date(Date.now() + 5000));
    const second = openManifest(await m.getManifest({ path, model: "" }), undefined).manifest;
    assert(second.sha256 !== first.sha256, "a new manifest for the new bytes");
    // The id's fingerprint reads the first 4 KiB of every tensor: the last byte is in the last
    // tensor, a 256-byte norm, so the ids differ too (name@size alone could not tell them apart).
    assert(second.modelId !== first.modelId, `${second.modelId} = ${first.modelId}`);
    // The old manifest's chunks are no longer served from the rewritten file.
    const last = first.segments.length - 1;
    const chunk = first.segments[last].chunkSha256.length - 1;
    const e = await (async () => {
      for await (
        const _ of m.fetchChunks(
          { sha256: first.sha256, chunks: [{ segment: last, chunk }] },
          new AbortController().signal,
        )
      ) { /* none */ }
    })().then(() => null, (e) => e);
    assert(e && /does not hold/.test(e.message), `${e}`);
  } finally {
    m.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a file whose bytes were offered under another name keeps its own name", async () => {
  // `models deploy s2.gguf` (a copy) then `models deploy stories260K.gguf`: the entry is the
  // bytes', renamed by the copy's manifest; the second deploy answered the copy's name
  // ("deployed s2.gguf@…", and clients asking for stories260K got a 404).
  const dir = await Deno.makeTempDir();
  const a = `${dir}/stories260K.gguf`;
  const b = `${dir}/s2.gguf`;
  await Deno.copyFile(STORIES, a);
  await Deno.copyFile(STORIES, b);
  const m = transferManager("src", `${dir}/cache`, 4096);
  const name = async (path: string) =>
    openManifest(await m.getManifest({ path, model: "" }), undefined).manifest.modelId;
  try {
    assert((await name(a)).startsWith("stories260K.gguf@"), await name(a));
    assert((await name(b)).startsWith("s2.gguf@"), await name(b));
    const again = await name(a);
    assert(again.startsWith("stories260K.gguf@"), `deployed again as ${again}`);
    assert((await name(b)).startsWith("s2.gguf@"), "and the copy as its own again");
  } finally {
    m.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a manifest asked for a file that is not a GGUF says so without quoting its bytes", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/secret.txt`;
  await Deno.writeTextFile(path, "root:x:0:0:root:/root:/bin/bash\n");
  const m = transferManager("src", `${dir}/cache`, 4096);
  try {
    const e = await m.getManifest({ path, model: "" }).then(() => null, (e) => e as Error);
    const message = e?.message ?? "no error";
    assert(message.includes(`${path} is not a GGUF file`), message);
    // Before: 'not a GGUF file (magic 72 6f 6f 74 "root", expected "GGUF")' to any RPC client.
    assert(!message.includes("root") && !message.includes("72 6f"), message);
  } finally {
    m.close();
    await Deno.remove(dir, { recursive: true });
  }
});
