// A stream that broke after it answered (hunt 4, F5): llmctl said "no agent at …, start one"
// (exit 3) when a head froze mid-generation, after 1100 tokens had been printed.
import { Code, ConnectError } from "@connectrpc/connect";
import { CliError, rpcError, streamCut } from "../../cli/client.ts";
import { ExitCode } from "../../cli/common.ts";
import { assert, assertEquals } from "../support/assert.ts";

Deno.test("streamCut: a transport failure after answers is an incomplete output, not a missing agent", () => {
  const lost = new ConnectError("PING timed out", Code.Unavailable, undefined, undefined, "x");
  // What it was before: the message for an agent that never answered.
  assertEquals(rpcError(lost, "127.0.0.1:7950", false).exitCode, ExitCode.unreachable);
  const cut = streamCut(lost, "127.0.0.1:7950", 1100)!;
  assert(cut instanceof CliError);
  assertEquals(cut.exitCode, ExitCode.failure);
  assert(/127\.0\.0\.1:7950 stopped answering after 1100 messages/.test(cut.message), cut.message);
  assert(cut.message.includes("PING timed out") && cut.message.includes("incomplete"));
  // Nothing received: the usual message stands. The agent's own error, or a cancel: as they are.
  assertEquals(streamCut(lost, "e", 0), undefined);
  const said = new ConnectError("no placement", Code.Unavailable, new Headers({ "x-a": "1" }));
  assertEquals(streamCut(said, "e", 5), undefined);
  assertEquals(
    streamCut(new ConnectError("the call was cancelled", Code.Canceled), "e", 5),
    undefined,
  );
});
