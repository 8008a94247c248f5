/**
 * Packet-level helpers shared by the protocol core: framing with the cluster-name header and
 * sealing with the keyring (and the reverse), packing several messages into one compound
 * datagram, and the drop reasons the receive loop counts.
 *
 * @module
 */
import { decode, DecodeError, encode, type Message } from "./codec.ts";
import type { Keyring } from "./keyring.ts";
import {
  ClusterMismatchError,
  labelHeader,
  removeHeader,
  WireVersionError,
  withHeader,
} from "./label.ts";
import { decrypt, DecryptError, encrypt, ENCRYPTION_OVERHEAD } from "./security.ts";

/** What framing needs of the configuration: the keys and the cluster's name. */
export interface Wire {
  /** Keys to seal with (the first) and open with (any); null = plaintext. */
  readonly keyring: Keyring | null;
  /** The cluster's name, carried in every packet's header. */
  readonly clusterName: string;
}

/** Why an incoming packet or stream was dropped; each has a counter in `stats.droppedPackets`. */
export type DropReason =
  | "decrypt" // failed authentication with every key (wrong key, tampered, plaintext)
  | "malformed" // decrypted (or plaintext) but not a valid message
  | "misdirected" // a ping meant for another node id at this address
  | "unexpected" // a valid message where it makes no sense (e.g. compound on a stream)
  | "stream" // stream timed out or broke
  | "full" // news of a new member while the table holds maxMembers
  | "cluster" // the header names another cluster (another --cluster-name)
  | "version" // the header names another wire version (another release)
  | "internal"; // a handler threw; a bug, logged

/**
 * `header | body`: the body sealed with the primary key (the header as its additional data), or
 * as is without a keyring.
 */
export function seal(wire: Wire, plain: Uint8Array): Uint8Array {
  const header = labelHeader(wire.clusterName);
  return withHeader(header, wire.keyring ? encrypt(wire.keyring.primary, plain, header) : plain);
}

/**
 * The plain body of `raw`. Throws {@linkcode ClusterMismatchError} for another cluster's
 * header, {@linkcode WireVersionError} for another wire version, {@linkcode DecodeError}
 * without a header, {@linkcode DecryptError} when no key opens it.
 */
export function open(wire: Wire, raw: Uint8Array): Uint8Array {
  const { header, body } = removeHeader(raw, wire.clusterName);
  return wire.keyring ? decrypt(wire.keyring.keys, body, header) : body;
}

/** Bytes available for messages in one datagram, after the header and the envelope. */
export function packetBudget(maxPacketSize: number, wire: Wire): number {
  return maxPacketSize - labelHeader(wire.clusterName).length -
    (wire.keyring ? ENCRYPTION_OVERHEAD : 0);
}

/** One message as is, several as a compound. */
export function pack(parts: Uint8Array[]): Uint8Array {
  return parts.length === 1 ? parts[0] : encode({ type: "compound", parts });
}

/**
 * Decode a datagram into its messages, all or nothing: a compound with one bad part is dropped
 * whole, so a malformed packet can never half-apply. Nested compounds are refused.
 */
export function unpack(plain: Uint8Array): Message[] {
  const m = decode(plain);
  if (m.type !== "compound") return [m];
  return m.parts.map((p) => {
    const inner = decode(p);
    if (inner.type === "compound") throw new DecodeError("nested compound");
    return inner;
  });
}

/** Map an error from the receive path to its drop counter. */
export function dropReason(e: unknown): DropReason {
  if (e instanceof ClusterMismatchError) return "cluster";
  if (e instanceof WireVersionError) return "version";
  if (e instanceof DecryptError) return "decrypt";
  if (e instanceof DecodeError) return "malformed";
  return "internal";
}
