/**
 * Whether a datagram sent to multicast `group` on loopback comes back here: a probe with plain
 * node:dgram, independent of the code under test, so a discovery test is skipped only where the
 * host cannot do multicast, and fails wherever it can but discovery does not work. Each test
 * file probes its own group, so files running in parallel do not hear each other.
 */
import dgram from "node:dgram";

/** Whether a datagram to `group`, sent and heard on interface `iface`, comes back within 1 s. */
async function hearsItself(
  type: "udp4" | "udp6",
  group: string,
  iface: string,
): Promise<boolean> {
  const sock = dgram.createSocket({ type, reuseAddr: true });
  try {
    const heard = new Promise<boolean>((resolve) => {
      sock.once("message", () => resolve(true));
      setTimeout(() => resolve(false), 1000);
    });
    await new Promise<void>((resolve, reject) => {
      sock.once("error", reject);
      sock.bind(0, () => resolve());
    });
    sock.addMembership(group, iface);
    sock.setMulticastInterface(iface);
    sock.setMulticastLoopback(true);
    sock.send(new Uint8Array([1]), sock.address().port, group);
    return await heard;
  } catch {
    return false;
  } finally {
    sock.close();
  }
}

/** True when loopback multicast to `group` (e.g. "239.255.79.47") works on this host. */
export function loopbackMulticastWorks(group: string): Promise<boolean> {
  return hearsItself("udp4", group, "127.0.0.1");
}

/**
 * A global (or unique-local) IPv6 address of an interface on which multicast to `group` (e.g.
 * "ff05::79:47") comes back here; undefined where there is none (no IPv6, or no multicast on it).
 */
export async function ipv6MulticastAddress(group: string): Promise<string | undefined> {
  let nics: Deno.NetworkInterfaceInfo[];
  try {
    nics = Deno.networkInterfaces();
  } catch {
    return undefined;
  }
  for (const nic of nics) {
    if (nic.family !== "IPv6" || nic.address === "::1" || /^fe80:/i.test(nic.address)) continue;
    if (await hearsItself("udp6", group, `::%${nic.name}`)) return nic.address;
  }
  return undefined;
}
