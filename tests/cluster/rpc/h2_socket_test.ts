/** HTTP/2 client sockets (cluster/rpc/h2_socket.ts) under the transports of rpc/transport.ts. */
import { ConnectError, createClient } from "@connectrpc/connect";
import { createRpcTransport } from "../../../cluster/rpc/mod.ts";
import { NodeService } from "../../../proto/mod.ts";
import { assert, assertRejects } from "../../support/assert.ts";

Deno.test("a server that hangs up on every connection fails the call at once: no uncaught EPIPE, no spinning", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let accepted = 0;
  const serving = (async () => {
    for await (const c of l) {
      accepted++;
      c.close();
    }
  })();
  const t = await createRpcTransport(`127.0.0.1:${(l.addr as Deno.NetAddr).port}`);
  // Before, the session's first write failed with EPIPE in the turn of its 'connect', with no
  // listener on: an uncaught error (llmctl died of it), and the interrupted session then spun
  // the event loop at 100% CPU with the call never settling (a timer would not even fire).
  let ticks = 0;
  const timer = setInterval(() => ticks++, 10);
  const t0 = performance.now();
  try {
    const e = await assertRejects(() => createClient(NodeService, t).healthCheck({}), ConnectError);
    const ms = performance.now() - t0;
    assert(ms < 5000, `${ms} ms`);
    assert(/EPIPE|closed|reset/i.test(e.message), e.message);
    assert(accepted <= 3, `${accepted} connections`);
    // The event loop kept turning meanwhile.
    await new Promise((r) => setTimeout(r, 50));
    assert(ticks > 0, "timers never ran");
  } finally {
    clearInterval(timer);
    t.close();
    l.close();
    await serving.catch(() => {});
  }
});

Deno.test("an IPv6 endpoint in brackets is dialled bare", async () => {
  let l: Deno.Listener;
  try {
    l = Deno.listen({ hostname: "::1", port: 0 });
  } catch {
    return; // no IPv6 loopback here
  }
  const got = (async () => {
    const c = await l.accept();
    c.close();
    return true;
  })();
  const t = await createRpcTransport(`[::1]:${(l.addr as Deno.NetAddr).port}`);
  try {
    await createClient(NodeService, t).healthCheck({}).catch(() => {});
    let timer: ReturnType<typeof setTimeout> | undefined;
    const within = new Promise<false>((r) => timer = setTimeout(() => r(false), 5000));
    const reached = await Promise.race([got, within]);
    clearTimeout(timer);
    assert(reached, "no connection reached [::1]");
  } finally {
    t.close();
    l.close();
  }
});
