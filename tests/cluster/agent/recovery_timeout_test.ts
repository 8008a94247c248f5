/** How long a head waits for a dead stage's layers: sized by the largest stage, not fixed. */
import { recoveryTimeoutMs } from "../../../cluster/agent/head_service.ts";
import { assert, assertEquals } from "../../support/assert.ts";

Deno.test("recovery wait: 30 s for toy stages, plus the largest stage at 20 MB/s", () => {
  assertEquals(recoveryTimeoutMs([]), 30_000);
  assertEquals(recoveryTimeoutMs([1_200_000, 1_600_000]), 31_000);
  // Llama-3-8B Q4_0 over 3 agents: stages of ~1.5-1.9 GB need far more than 30 s to be fetched
  // and loaded by a standby.
  const eightB = recoveryTimeoutMs([1.77e9, 1.0e9, 1.77e9]);
  assertEquals(eightB, 30_000 + 89_000);
  assert(eightB > 60_000);
});
