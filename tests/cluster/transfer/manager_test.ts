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
