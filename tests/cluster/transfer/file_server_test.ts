/** `llmctl models deploy --from-here`'s file server shares the one file it was started with. */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { fromBinary } from "@bufbuild/protobuf";
import { startFileServer } from "../../../cluster/transfer/mod.ts";
import { createRpcTransport } from "../../../cluster/rpc/mod.ts";
import { TransferManifestSchema, TransferService } from "../../../proto/mod.ts";
import { FIXTURES } from "../../support/paths.ts";
import { assertEquals, assertRejects } from "../../support/assert.ts";
import { STORIES } from "./stories_fixture.ts";

Deno.test("the --from-here file server answers for its one file only", async () => {
  const dir = await Deno.makeTempDir();
  const shared = `${dir}/shared.gguf`;
  await Deno.copyFile(STORIES, shared);
  const server = await startFileServer({ host: "127.0.0.1", path: shared });
  const transport = await createRpcTransport(server.endpoint);
  const client = createClient(TransferService, transport);
  try {
    const mine = await client.getManifest({ path: `${dir}/./shared.gguf` });
    const manifest = fromBinary(TransferManifestSchema, mine.manifest);
    assertEquals(manifest.fileSize, BigInt((await Deno.stat(STORIES)).size));
    // Before, any GGUF on the machine was served to whoever named its path.
    const code = async (f: () => Promise<unknown>) =>
      ConnectError.from(await assertRejects(f, Error)).code;
    assertEquals(
      await code(() => client.getManifest({ path: `${FIXTURES}/models/tiny-f32.gguf` })),
      Code.PermissionDenied,
    );
    // Sources looking for holders ask by model id: they get the shared file's manifest.
    const byModel = await client.getManifest({ model: "anything" });
    assertEquals(fromBinary(TransferManifestSchema, byModel.manifest).sha256, manifest.sha256);
    // It is no agent: deploys, prepares and undeploys are not its to answer.
    assertEquals(
      await code(() => client.undeploy({ model: manifest.modelId })),
      Code.Unimplemented,
    );
    assertEquals(await code(() => client.transferStatus({})), Code.Unimplemented);
  } finally {
    transport.close();
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});
