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
  // A code with no client meaning stays a 500 worded as a bug.
  const internal = toApiError(new ConnectError("boom", Code.Internal));
  assertEquals(internal.status, 500);
  assert(internal.message.includes("a bug"), internal.message);
});
