// Shared helpers for the gossip tests: build simulated clusters, wait for conditions.
import {
  type Config,
  Keyring,
  lanConfig,
  Memberlist,
  SimNetwork,
  type SimOptions,
} from "../../../cluster/gossip/mod.ts";
import { seal } from "../../../cluster/gossip/net.ts";

/** A simulated cluster: the network and its members (index = node number). */
export interface SimCluster {
  net: SimNetwork;
  members: Memberlist[];
}

/** Config for simulated member i, sharing the network's seeded rng. */
export function simConfig(net: SimNetwork, i: number, over: Partial<Config> = {}): Config {
  return lanConfig({ nodeId: `n${i}`, rng: net.rng, ...over });
}

/**
 * Start n members and join each to member 0, one after another (as a rolling deploy would),
 * then run until every member sees all n, or throw.
 */
export async function formCluster(
  n: number,
  opts: SimOptions = {},
  over: (i: number, net: SimNetwork) => Partial<Config> = () => ({}),
): Promise<SimCluster> {
  const net = new SimNetwork(opts);
  const members: Memberlist[] = [];
  for (let i = 0; i < n; i++) {
    members.push(Memberlist.create(simConfig(net, i, over(i, net)), net.createTransport()));
  }
  for (let i = 1; i < n; i++) await net.settle(members[i].join([members[0].transport.addr]));
  const t = await net.runUntil(() => members.every((m) => m.numMembers() === n), 120_000, 50);
  if (t === null) throw new Error(`${n}-node simulated cluster did not converge in 120 s`);
  return { net, members };
}

/** p-th percentile (0..100) of numbers, nearest-rank. */
export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

/**
 * Encoded messages as a member of `cluster` (default "default") sends them: behind the
 * cluster-name header, sealed when `key` is given. For tests that forge or replay packets.
 */
export function packet(
  plain: Uint8Array,
  opts: { key?: Uint8Array; cluster?: string } = {},
): Uint8Array {
  return seal({
    keyring: opts.key ? new Keyring(opts.key) : null,
    clusterName: opts.cluster ?? "default",
  }, plain);
}
