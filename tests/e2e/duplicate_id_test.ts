/**
 * An agent started with a node id a live member already uses is no member: it plans and hosts
 * nothing, its HTTP API answers 503 naming the conflict, readiness and `llmctl cluster status`
 * say so, and it exits 1 with a clear message once the id has stayed taken for the patience
 * (29 s with the local preset). Before, it planned the whole model alone, loaded it and served
 * requests as that member while logging the conflict every 5 s, for ever.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { startAgent, startCluster, stopAll, waitForPlacement } from "../support/agents.ts";
import { llmctlJson } from "../support/cli.ts";
import { STORIES } from "../support/paths.ts";
import { encode, labelHeader } from "../../cluster/gossip/mod.ts";
import { orTimeout } from "../../cluster/deadline.ts";

Deno.test("a duplicate node id stands aside (no layers, 503 naming the conflict), then exits 1", async () => {
  const cluster = await startCluster(["a", "b"], { model: STORIES });
  const agents = [...cluster];
  try {
    await waitForPlacement(cluster[0], 2);
    const startedAt = Date.now();
    const dup = await startAgent({ id: "b", seeds: [cluster[0].gossipAddr], model: STORIES });
    agents.push(dup);
    const conflict = 'node id "b" is already used by a live member at';
    const end = Date.now() + 10_000;
    while (!dup.logs.some((l) => String(l.msg).includes(conflict))) {
      if (Date.now() > end) throw new Error(`no conflict logged:\n${dup.stderr.join("\n")}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    // Give a plan the time it took before (250 ms after start) to show up, if it would.
    await new Promise((r) => setTimeout(r, 1500));
    assertEquals(dup.logs.filter((l) => l.msg === "stage loaded" || l.msg === "placement"), []);

    const status = await llmctlJson([
      "cluster",
      "status",
      "--json",
      "--endpoint",
      `127.0.0.1:${dup.rpcPort}`,
    ]);
    assertEquals(status.ready, false);
    assertEquals(status.stages, []);
    assert(String(status.placement_error).includes(conflict), String(status.placement_error));

    const completion = await fetch(`http://127.0.0.1:${dup.httpPort}/v1/completions`, {
      method: "POST",
      body: JSON.stringify({ model: "stories260K", prompt: "Once", max_tokens: 4 }),
    });
    const body = await completion.json();
    assertEquals(completion.status, 503, JSON.stringify(body));
    assert(body.error.message.includes(conflict), body.error.message);

    const ready = await fetch(`http://127.0.0.1:${dup.metricsPort}/health?ready=1`);
    const readiness = await ready.json();
    assertEquals(ready.status, 503);
    assert(String(readiness.detail).includes(conflict), JSON.stringify(readiness));
    const health = await (await fetch(`http://127.0.0.1:${dup.httpPort}/health`)).json();
    assertEquals(health.status, "node_id_conflict");

    // The cluster is untouched: b is the first one, and it serves.
    const seen = await llmctlJson([
      "cluster",
      "status",
      "--json",
      "--endpoint",
      `127.0.0.1:${cluster[0].rpcPort}`,
    ]);
    assertEquals(seen.ready, true);
    assertEquals((seen.nodes as { alive: number }).alive, 2);

    // It gives up after the patience (29 s with the local preset) with a clear message, exit 1.
    const status2 = await orTimeout(
      dup.exited,
      45_000,
      () => new Error("the duplicate is still running after 45 s"),
    );
    assertEquals(status2.code, 1);
    const last = dup.stderr.at(-1) ?? "";
    assert(last.startsWith('agent: giving up: node id "b" is still used by a live member'), last);
    assert(Date.now() - startedAt >= 25_000, `exited after ${Date.now() - startedAt} ms`);
    agents.pop();
  } finally {
    await stopAll(agents);
  }
});

Deno.test("a refusal that comes late (a slow seed) still finds the agent with no plan and no layers", async () => {
  // A seed that answers the join 700 ms later (within the local preset's 1 s stream timeout):
  // before, the agent planned itself the whole model 250 ms after start and loaded it.
  const seed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = (async () => {
    for await (const conn of seed) {
      (async () => {
        await conn.read(new Uint8Array(65536)).catch(() => null);
        await new Promise((r) => setTimeout(r, 700));
        // A frame of the agent's cluster: its cluster-name header, then the message.
        const header = labelHeader("default");
        const body = encode({
          type: "error",
          code: "duplicate-id",
          message: 'node id "b" is already used by a live member at 10.9.9.9:7946',
        });
        const reply = new Uint8Array(header.length + body.length);
        reply.set(header);
        reply.set(body, header.length);
        const frame = new Uint8Array(4 + reply.length);
        new DataView(frame.buffer).setUint32(0, reply.length);
        frame.set(reply, 4);
        await conn.write(frame).catch(() => {});
        setTimeout(() => conn.close(), 200);
      })();
    }
  })();
  const port = (seed.addr as Deno.NetAddr).port;
  const dup = await startAgent({ id: "b", seeds: [`127.0.0.1:${port}`], model: STORIES });
  try {
    const end = Date.now() + 10_000;
    while (!dup.logs.some((l) => String(l.msg).includes("already used by a live member"))) {
      if (Date.now() > end) throw new Error(`no conflict logged:\n${dup.stderr.join("\n")}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    await new Promise((r) => setTimeout(r, 1000));
    assertEquals(dup.logs.filter((l) => l.msg === "stage loaded" || l.msg === "placement"), []);
  } finally {
    await stopAll([dup]);
    seed.close();
    await serving.catch(() => {});
  }
});

Deno.test("an agent whose id was taken over while it was frozen stops when it comes back (no zombie)", async () => {
  const cluster = await startCluster(["a", "b"], { model: STORIES });
  const agents = [...cluster];
  const [a, old] = cluster;
  try {
    await waitForPlacement(a, 2);
    old.child.kill("SIGSTOP");
    // A restart of b elsewhere: refused while the frozen b is alive, in once it is dead ("the node
    // id is ours now", then "joined the cluster"). On a loaded machine a may have declared the
    // frozen b dead before the restart asks: then it joins at once, with no refusal first.
    const reborn = await startAgent({ id: "b", seeds: [a.gossipAddr], model: STORIES });
    agents.push(reborn);
    const end = Date.now() + 40_000;
    while (!reborn.logs.some((l) => l.msg === "joined the cluster")) {
      if (Date.now() > end) throw new Error(`the restart never got the id:\n${reborn.stderr}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    old.child.kill("SIGCONT");
    // Before, the old b went on hosting layers and answering as b, silently, for ever.
    const exited = await orTimeout(
      old.exited,
      45_000,
      () => new Error("the superseded agent still runs 45 s after it came back"),
    );
    assertEquals(exited.code, 1);
    const last = old.stderr.at(-1) ?? "";
    assert(last.includes('node id "b" is now held by a live member at'), last);
    agents.splice(agents.indexOf(old), 1);
    // The cluster keeps the new b.
    await waitForPlacement(a, 2);
  } finally {
    try {
      old.child.kill("SIGCONT");
    } catch {
      // it exited
    }
    await stopAll(agents);
  }
});
