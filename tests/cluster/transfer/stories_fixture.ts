/** The stories260K set-up the transfer tests share. */
import {
  computeManifest,
  detachedHost,
  type TransferHost,
  TransferManager,
} from "../../../cluster/transfer/mod.ts";
import { REPO } from "../../support/paths.ts";

/** The stories260K model every transfer test moves. */
export const STORIES = `${REPO}/models/stories260K.gguf`;

/** stories260K's manifest in chunks of `chunkSize`, its encoding, the file's bytes, a temp dir. */
export async function storiesFixture(chunkSize: number) {
  const { manifest, bytes: raw } = await computeManifest(STORIES, { nodeId: "a", chunkSize });
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
