/** How errors reach an OpenAI client: status, body, and no "bug" for another agent's refusal. */
import { Code, ConnectError } from "@connectrpc/connect";
import { toApiError } from "../../../cluster/api/errors.ts";
import { assert, assertEquals } from "../../support/assert.ts";

Deno.test("an error another agent answered keeps its status (a remote tail's refusal is a 400, not a bug)", () => {
  const remote = toApiError(new ConnectError("topP must be in (0, 1]", Code.InvalidArgument));
  assertEquals(remote.status, 400);
  assertEquals(remote.message, "topP must be in (0, 1]");
  assertEquals(toApiError(new ConnectError("full", Code.ResourceExhausted)).status, 429);
  assertEquals(toApiError(new ConnectError("gone", Code.Unavailable)).status, 503);
  // Codes that say nothing about the client's request stay 500s worded as a bug: an agent's 401
  // (a proxy between agents) is not the client's key, which SDKs would stop retrying on.
  for (const code of [Code.Internal, Code.Unauthenticated, Code.NotFound]) {
    const e = toApiError(new ConnectError("boom", code));
    assertEquals(e.status, 500, Code[code]);
    assert(e.message.includes("a bug"), e.message);
  }
});
