// In-process members on real UDP/TCP loopback sockets: join by a DNS name, leave gracefully,
// transports bind 127.0.0.1 by default and refuse unsendable addresses quietly.
import { assert, assertEquals, assertRejects } from "../../support/assert.ts";
import {
  JoinError,
  localConfig,
  Memberlist,
  splitHostPort,
  UdpTransport,
} from "../../../cluster/gossip/mod.ts";

async function until(pred: () => boolean, ms: number, what: string) {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

Deno.test("udp: three members join via 'localhost:port', then one leaves gracefully", async () => {
  const ms: Memberlist[] = [];
  try {
    for (const id of ["a", "b", "c"]) {
      ms.push(
        Memberlist.create(localConfig({ nodeId: id }), await UdpTransport.listen({ port: 0 })),
      );
    }
    assert(ms[0].transport.addr.startsWith("127.0.0.1:"), "default bind is loopback");
    const port = splitHostPort(ms[0].transport.addr).port;
    // "localhost" goes through the system resolver; ::1 (if listed) is not bound and just fails
    assert(await ms[1].join([`localhost:${port}`]) >= 1);
    assert(await ms[2].join([`localhost:${port}`]) >= 1);
    await until(() => ms.every((m) => m.numMembers() === 3), 5000, "3 members");
    const left: string[] = [];
    ms[1].on("leave", (e) => left.push(e.member.id));
    ms[2].on("leave", (e) => left.push(e.member.id));
    await ms[0].leave(2000);
    await ms[0].shutdown();
    await until(() => left.length === 2, 5000, "leave to be seen");
    assertEquals(left, ["a", "a"]);
    assertEquals(ms[1].member("a")?.status, "left");
  } finally {
    for (const m of ms) await m.shutdown();
  }
});

Deno.test("udp: joining nothing that answers is a JoinError naming each seed", async () => {
  const m = Memberlist.create(
    localConfig({ nodeId: "lonely", tcpTimeout: 300 }),
    await UdpTransport.listen({ port: 0 }),
  );
  try {
    await assertRejects(() => m.join(["127.0.0.1:1"]), JoinError, "127.0.0.1:1");
    m.transport.sendPacket("not-an-address", new Uint8Array([1])); // must not throw
  } finally {
    await m.shutdown();
  }
});
