/** The stories260K set-up the transfer tests share. */
import { toBinary } from "@bufbuild/protobuf";
import { GetManifestResponseSchema } from "../../../proto/mod.ts";
import {
  computeManifest,
  detachedHost,
  signedManifest,
  type TransferHost,
  TransferManager,
} from "../../../cluster/transfer/mod.ts";
import { STORIES } from "../../support/paths.ts";

/** The stories260K model every transfer test moves. */
export { STORIES };

/**
 * stories260K's manifest in chunks of `chunkSize`, its unsigned GetManifest answer encoded (what
 * a cache stores as manifest.bin), the file's bytes, a temp dir.
 */
export async function storiesFixture(chunkSize: number) {
  const { manifest, bytes } = await computeManifest(STORIES, { nodeId: "a", chunkSize });
  // The answer, not the bare manifest: ModelCache.open compares what manifest.bin says.
  const raw = toBinary(GetManifestResponseSchema, signedManifest(bytes, undefined, []));
  return { manifest, raw, bytes: await Deno.readFile(STORIES), dir: await Deno.makeTempDir() };
}

/** A TransferManager for node `nodeId` with no agent behind it; `host` overrides its hooks. */
export function transferManager(
  nodeId: string,
  cacheDir: string,
  chunkSize: number,
  host: Partial<TransferHost> = {},
): TransferManager {
  return new TransferManager(detachedHost(nodeId, host), { cacheDir, rateLimit: 0, chunkSize });
}
