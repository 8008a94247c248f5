/**
 * Whether a datagram sent to multicast `group` on loopback comes back here: a probe with plain
 * node:dgram, independent of the code under test, so a discovery test is skipped only where the
 * host cannot do multicast, and fails wherever it can but discovery does not work. Each test
 * file probes its own group, so files running in parallel do not hear each other.
 */
import dgram from "node:dgram";

/** True when loopback multicast to `group` (e.g. "239.255.79.47") works on this host. */
export async function loopbackMulticastWorks(group: string): Promise<boolean> {
  const sock = dgram.createSocket({ type: "udp4", reuseAddr: true });
  try {
    const heard = new Promise<boolean>((resolve) => {
      sock.once("message", () => resolve(true));
      setTimeout(() => resolve(false), 1000);
    });
    await new Promise<void>((resolve, reject) => {
      sock.once("error", reject);
      sock.bind(0, () => resolve());
    });
    sock.addMembership(group, "127.0.0.1");
    sock.setMulticastInterface("127.0.0.1");
    sock.setMulticastLoopback(true);
    sock.send(new Uint8Array([1]), sock.address().port, group);
    return await heard;
  } catch {
    return false;
  } finally {
    sock.close();
  }
}
