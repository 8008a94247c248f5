/**
 * Cluster membership: SWIM + Lifeguard gossip over UDP (TCP for push-pull), AES-256-GCM
 * encrypted, modelled on hashicorp/memberlist. The protocol core is free of sockets and clocks:
 * the same code runs on {@linkcode UdpTransport} and on the deterministic {@linkcode SimNetwork}.
 *
 * @example
 * ```ts
 * import { lanConfig, Memberlist } from "./mod.ts";
 * const ml = await Memberlist.listen(lanConfig({ nodeId: "gpu-1" }), { bindAddr: "10.0.0.5" });
 * ml.on("dead", (e) => console.log(e.member.id, "is gone"));
 * await ml.join(["gossip.llm.svc.cluster.local:7946"]);
 * ```
 *
 * @module
 */

/** The member object and its entry points. */
export {
  create,
  DEFAULT_GOSSIP_PORT,
  JoinError,
  Memberlist,
  resolveSeeds,
  systemResolver,
} from "./memberlist.ts";
/** Member snapshots, events, counters and the duplicate-id error. */
export {
  DuplicateNodeIdError,
  type EventType,
  type Member,
  type MemberEvent,
  type Stats,
} from "./member.ts";
/** Configuration presets and knobs. */
export {
  type Config,
  type ConfigInput,
  lanConfig,
  localConfig,
  type Logger,
  pushPullScale,
  type Resolver,
  wanConfig,
} from "./config.ts";
/** Member metadata (≤ 512 bytes) and its codec. */
export {
  decodeMetadata,
  emptyMetadata,
  encodeMetadata,
  type HostedLayers,
  type KvReserve,
  MAX_METADATA_BYTES,
  MetadataError,
  type NodeMetadata,
  type Resources,
} from "./metadata.ts";
/** Keyring for rotation without downtime, and the AES-GCM envelope. */
export { Keyring, KeyringError } from "./keyring.ts";
/** The cluster-name header of every packet and frame (memberlist's Label). */
export {
  ClusterMismatchError,
  labelHeader,
  MAX_CLUSTER_NAME,
  WIRE_MAGIC,
  WIRE_VERSION,
  WireVersionError,
} from "./label.ts";
/** The AES-256-GCM envelope `version | nonce | ciphertext | tag`. */
export { decrypt, DecryptError, encrypt, ENCRYPTION_OVERHEAD } from "./security.ts";
/** Transports: the interface, real UDP/TCP, and userspace impairment. */
export {
  ImpairedTransport,
  type Impairment,
  joinHostPort,
  type PortBinders,
  splitHostPort,
  type Stream,
  systemPorts,
  type Transport,
  UdpTransport,
  type UdpTransportOptions,
} from "./transport.ts";
/** The deterministic simulated network. */
export { type LinkProfile, SimClock, SimNetwork, type SimOptions, SimTransport } from "./sim.ts";
/** Injected time and randomness. */
export { type Clock, type Rng, seededRng, systemClock, systemRng } from "./clock.ts";
/** Opt-in LAN discovery by UDP multicast. */
export {
  canonicalHost,
  DISCOVERY_GROUPS,
  type DiscoveryOptions,
  MulticastDiscovery,
  multicastInterface,
} from "./discovery.ts";
/** Wire codec (for tools and fuzzing). */
export { decode, DecodeError, encode, type Message, type NodeStatus } from "./codec.ts";
/** Lifeguard suspicion timeout math. */
export { suspicionTimeout, suspicionTotal } from "./suspicion.ts";
/** Broadcast retransmit limit. */
export { retransmitLimit } from "./broadcast.ts";
