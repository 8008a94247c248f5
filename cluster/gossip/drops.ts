/**
 * Dropped packets and streams: counted by reason, handler failures logged, and what an operator
 * must hear of named in a warning, each kind at most once a minute: gossip of another cluster
 * (another --cluster-name) or release, a peer whose gossip none of our keys opens (or that
 * gossips with keys while we have none, or without while we have them), and bytes that are not
 * gossip at all (llmctl or an HTTP client pointed at the gossip port).
 *
 * @module
 */
import type { Clock } from "./clock.ts";
import type { Config } from "./config.ts";
import type { Stats } from "./member.ts";
import { ClusterMismatchError, splitHeader, WIRE_VERSION, WireVersionError } from "./label.ts";
import { type DropReason, unpack } from "./net.ts";
import { DecryptError, ENCRYPTION_OVERHEAD, ENCRYPTION_VERSION } from "./security.ts";
import { FrameError } from "./transport.ts";

/**
 * What dropped bytes were, as far as an operator cares: gossip of another cluster (another
 * --cluster-name), of another wire version or of a release before the cluster-name header,
 * gossip sealed with a key we lack, plaintext gossip reaching a member with keys, sealed gossip
 * reaching a member without, or another protocol's bytes.
 */
export type Stranger =
  | "cluster"
  | "wire-version"
  | "old-wire"
  | "wrong-key"
  | "plaintext"
  | "sealed"
  | "not-gossip";

/**
 * Classify a dropped packet or stream frame. `raw`: the bytes that failed (undefined where a
 * stream broke before a frame). Null: nothing to warn about (a key holder's malformed message,
 * a timeout).
 */
export function stranger(e: unknown, raw: Uint8Array | undefined, keyed: boolean): Stranger | null {
  // A frame length no member sends: "PRI " (HTTP/2), "GET " (HTTP/1), a TLS record…
  if (e instanceof FrameError) return "not-gossip";
  if (e instanceof ClusterMismatchError) return "cluster";
  if (e instanceof WireVersionError) return "wire-version";
  if (raw === undefined) return null;
  let body: Uint8Array;
  try {
    body = splitHeader(raw).body;
  } catch {
    // No header: gossip as releases before it sent it (a message, or a sealed envelope), or not
    // gossip at all.
    return decodes(raw) || looksSealed(raw) ? "old-wire" : "not-gossip";
  }
  if (keyed) {
    if (!(e instanceof DecryptError)) return null;
    // Our cluster's header over a plain message: a member without keys.
    if (decodes(body)) return "plaintext";
    // A well-formed envelope that fails authentication: sealed with another key.
    return e.reason === "auth" ? "wrong-key" : null;
  }
  // Without keys, a body that fails to decode is a keyed member's envelope, or a broken message.
  return looksSealed(body) ? "sealed" : null;
}

function looksSealed(b: Uint8Array): boolean {
  return b.length >= ENCRYPTION_OVERHEAD && b[0] === ENCRYPTION_VERSION;
}

function decodes(raw: Uint8Array): boolean {
  try {
    unpack(raw);
    return true;
  } catch {
    return false;
  }
}

/** The warnings, by what they are about; key mismatches share one rate limit. */
const WORDS: Record<Stranger, string> = {
  cluster: "dropped gossip of another cluster: is an agent started with another --cluster-name " +
    "given this one as a seed (or is this one's --cluster-name wrong)?",
  "wire-version": "dropped gossip of another wire version: run one release on every member",
  "old-wire": "dropped gossip without a cluster-name header: is a member running an older " +
    "release? run one release on every member",
  "wrong-key":
    "dropped gossip that none of our keys opens: is a member running with other --gossip-keys?",
  plaintext:
    "dropped plaintext gossip: is a member running without --gossip-keys while this one has them?",
  sealed:
    "dropped gossip this member cannot read: is a member running with --gossip-keys while this one runs without?",
  "not-gossip":
    "dropped bytes that are not gossip at all (not a key mismatch): is a client (llmctl, curl, a " +
    "browser) pointed at the gossip port instead of the RPC or HTTP port?",
};

/** Which rate limit a kind of warning shares. */
const GROUP: Record<Stranger, "keys" | "protocol" | "cluster" | "version"> = {
  cluster: "cluster",
  "wire-version": "version",
  "old-wire": "version",
  "wrong-key": "keys",
  plaintext: "keys",
  sealed: "keys",
  "not-gossip": "protocol",
};

/** At most one warning a minute per kind. */
const WARN_EVERY_MS = 60_000;

/** Printable start of foreign bytes: enough to recognise "PRI " (HTTP/2) or "GET ". */
function head(raw: Uint8Array): string {
  let out = "";
  for (const b of raw.subarray(0, 8)) {
    out += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, "0")}`;
  }
  return out;
}

/** Counts drops into `stats` and says what an operator must hear of. */
export class Drops {
  /** Per warning group (keys, protocol): when it was last logged, and the drops since. */
  readonly #warned = new Map<string, { at: number; since: number }>();

  constructor(
    private readonly stats: Stats,
    private readonly cfg: Pick<Config, "logger" | "keyring">,
    private readonly clock: Clock,
  ) {}

  /**
   * Count a dropped packet or stream from `from` (and log handler failures, key mismatches and
   * foreign bytes); `raw`, the bytes that failed to open or decode, when there were some.
   */
  drop(reason: DropReason, e?: unknown, from?: string, raw?: Uint8Array): void {
    this.stats.droppedPackets[reason]++;
    if (reason === "internal") {
      this.cfg.logger?.("warn", "gossip handler failed", { error: String(e) });
    } else if (
      reason === "decrypt" || reason === "malformed" || reason === "cluster" ||
      reason === "version"
    ) {
      const kind = stranger(e, e instanceof FrameError ? e.head : raw, this.cfg.keyring !== null);
      if (kind) this.#warn(kind, from, e instanceof FrameError ? e.head : raw, e);
    }
  }

  /**
   * Say what arrived, at most once a minute per group: a member started with other
   * --gossip-keys (or none) otherwise only showed as a counter here, and its join failed with a
   * bare "stream closed" on its side; a client pointed at the gossip port was worded as a key
   * mismatch.
   */
  #warn(kind: Stranger, from: string | undefined, raw: Uint8Array | undefined, e: unknown): void {
    const group = GROUP[kind];
    const w = this.#warned.get(group) ?? { at: -Infinity, since: 0 };
    this.#warned.set(group, w);
    w.since++;
    const now = this.clock.now();
    if (now - w.at < WARN_EVERY_MS) return;
    w.at = now;
    this.cfg.logger?.("warn", WORDS[kind], {
      from: from ?? "?",
      dropped: w.since,
      keys: this.cfg.keyring?.keys.length ?? 0,
      ...(kind === "not-gossip" && raw ? { starts: head(raw) } : {}),
      ...(e instanceof ClusterMismatchError ? { theirs: e.theirs, ours: e.ours } : {}),
      ...(e instanceof WireVersionError ? { theirs: e.theirs, ours: WIRE_VERSION } : {}),
    });
    w.since = 0;
  }
}
