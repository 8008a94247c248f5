/**
 * Packet-level helpers shared by the protocol core: sealing/opening with the keyring, packing
 * several messages into one compound datagram, and the drop reasons the receive loop counts.
 *
 * @module
 */
import { decode, DecodeError, encode, type Message } from "./codec.ts";
import type { Keyring } from "./keyring.ts";
import { decrypt, DecryptError, encrypt, ENCRYPTION_OVERHEAD } from "./security.ts";

/** Why an incoming packet or stream was dropped; each has a counter in `stats.droppedPackets`. */
export type DropReason =
  | "decrypt" // failed authentication with every key (wrong key, tampered, plaintext)
  | "malformed" // decrypted (or plaintext) but not a valid message
  | "misdirected" // a ping meant for another node id at this address
  | "unexpected" // a valid message where it makes no sense (e.g. compound on a stream)
  | "stream" // stream timed out or broke
  | "full" // news of a new member while the table holds maxMembers
  | "internal"; // a handler threw; a bug, logged

/** Seal with the primary key, or pass through when there is no keyring. */
export function seal(keyring: Keyring | null, plain: Uint8Array): Uint8Array {
  return keyring ? encrypt(keyring.primary, plain) : plain;
}

/** Open with any key, or pass through; throws {@linkcode DecryptError}. */
export function open(keyring: Keyring | null, sealed: Uint8Array): Uint8Array {
  return keyring ? decrypt(keyring.keys, sealed) : sealed;
}

/** Bytes available for messages in one datagram. */
export function packetBudget(maxPacketSize: number, keyring: Keyring | null): number {
  return maxPacketSize - (keyring ? ENCRYPTION_OVERHEAD : 0);
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
  if (e instanceof DecryptError) return "decrypt";
  if (e instanceof DecodeError) return "malformed";
  return "internal";
}
