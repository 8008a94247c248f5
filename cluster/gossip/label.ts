/**
 * The cluster-name header every datagram and stream frame starts with (memberlist's `Label`):
 * `magic(1) | wire version(1) | name length(1) | name (UTF-8)`. A member drops what carries
 * another name, so agents started with another `--cluster-name` never merge, even through a
 * seed of the other cluster. With keys, the header is the AES-GCM additional data of the sealed
 * body: a name cannot be stripped or rewritten without failing authentication. The name is
 * authenticated, not secret (as memberlist's label): it travels in the clear.
 *
 * The version byte comes right after the magic byte so that any later layout can still be
 * recognised as "another wire version" by this one, and worded as such.
 *
 * @module
 */
import { DecodeError } from "./codec.ts";

/**
 * First byte of every gossip packet and frame. Neither a message type (1–13) nor the envelope
 * version (1) of the format before the header, and not printable ASCII (HTTP, TLS records), so
 * a header-less packet of an older release is told apart from a new one and from other bytes.
 */
export const WIRE_MAGIC = 0xd1;
/**
 * Version of the gossip wire format this release speaks. 1: the first with the header. 2: node
 * metadata carries a life after its flags, which version 1 refused as trailing bytes (and then
 * saw the member with no metadata at all, silently); from 2 on, fields past the known ones are
 * read past, so adding one no longer needs a new version.
 */
export const WIRE_VERSION = 2;
/** Longest cluster name in bytes (one length byte, as memberlist's LabelMaxSize). */
export const MAX_CLUSTER_NAME = 255;
/** Header bytes before the name. */
const FIXED = 3;

const te = new TextEncoder();
const td = new TextDecoder("utf-8", { fatal: true });

/** Gossip from a member of another cluster (its name in the header differs from ours). */
export class ClusterMismatchError extends DecodeError {
  override name = "ClusterMismatchError";
  /**
   * @param theirs the name the bytes carry @param ours this member's cluster name
   * @param message what happened, if not the default wording
   */
  constructor(readonly theirs: string, readonly ours: string, message?: string) {
    super(message ?? `gossip of cluster "${theirs}" reached a member of cluster "${ours}"`);
  }
}

/** Gossip in another wire version than {@linkcode WIRE_VERSION} (another release). */
export class WireVersionError extends DecodeError {
  override name = "WireVersionError";
  /** @param theirs the version the bytes carry @param message if not the default wording */
  constructor(readonly theirs: number, message?: string) {
    super(
      message ??
        `gossip of wire version ${theirs} reached a member speaking version ${WIRE_VERSION}`,
    );
  }
}

/** Throw unless `name` fits the header: 1–255 bytes of UTF-8. */
export function checkClusterName(name: string): void {
  const n = te.encode(name).length;
  if (n === 0 || n > MAX_CLUSTER_NAME) {
    throw new Error(`cluster name "${name}" is ${n} bytes; it must be 1 to ${MAX_CLUSTER_NAME}`);
  }
}

let cached: { name: string; header: Uint8Array } | undefined;

/**
 * The header for cluster `name` (cached: a member sends under one name).
 *
 * @example
 * ```ts
 * labelHeader("lab"); // [0xd1, 1, 3, 0x6c, 0x61, 0x62]
 * ```
 */
export function labelHeader(name: string): Uint8Array {
  if (cached?.name === name) return cached.header;
  checkClusterName(name);
  const bytes = te.encode(name);
  const header = new Uint8Array(FIXED + bytes.length);
  header.set([WIRE_MAGIC, WIRE_VERSION, bytes.length]);
  header.set(bytes, FIXED);
  cached = { name, header };
  return header;
}

/** `header | body` in one buffer. */
export function withHeader(header: Uint8Array, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(header.length + body.length);
  out.set(header);
  out.set(body, header.length);
  return out;
}

/**
 * Split `raw` into its header and body without judging the name. Throws {@linkcode DecodeError}
 * when there is no header (an older release's packet, or not gossip), {@linkcode
 * WireVersionError} for another version (its layout past the version byte is unknown).
 */
export function splitHeader(
  raw: Uint8Array,
): { header: Uint8Array; name: string; body: Uint8Array } {
  if (raw.length < FIXED || raw[0] !== WIRE_MAGIC) {
    throw new DecodeError("no cluster-name header: not gossip, or gossip of an older release");
  }
  if (raw[1] !== WIRE_VERSION) throw new WireVersionError(raw[1]);
  const end = FIXED + raw[2];
  if (raw[2] === 0 || end > raw.length) {
    throw new DecodeError(`cluster-name header of ${raw[2]} bytes in a ${raw.length}-byte packet`);
  }
  let name: string;
  try {
    name = td.decode(raw.subarray(FIXED, end));
  } catch {
    throw new DecodeError("cluster name is not UTF-8");
  }
  return { header: raw.subarray(0, end), name, body: raw.subarray(end) };
}

/**
 * Check `raw`'s header against cluster `ours` and return header and body; throws as
 * {@linkcode splitHeader}, and {@linkcode ClusterMismatchError} for another cluster's name.
 */
export function removeHeader(
  raw: Uint8Array,
  ours: string,
): { header: Uint8Array; body: Uint8Array } {
  const { header, name, body } = splitHeader(raw);
  if (name !== ours) throw new ClusterMismatchError(name, ours);
  return { header, body };
}
