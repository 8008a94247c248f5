/**
 * proto/gen/ must be exactly what proto/generate.ts makes from the .proto files (which must
 * also pass `buf lint`). Needs npm once, to install buf and protoc-gen-es into .cache/.
 */
import { staleFiles } from "../../proto/generate.ts";
import { assertEquals } from "../support/assert.ts";

Deno.test("proto/gen is up to date with proto/distributed_llm/v1/*.proto", async () => {
  const stale = await staleFiles();
  assertEquals(stale, [], `stale generated files; run: deno run -A proto/generate.ts`);
});
