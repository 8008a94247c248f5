/**
 * Dropped packets and streams: counted by reason, handler failures logged, and a peer whose
 * gossip none of our keys opens (or, without keys, that reads as malformed) named in a warning,
 * at most once a minute.
 *
 * @module
 */
import type { Clock } from "./clock.ts";
import type { Config } from "./config.ts";
import type { Stats } from "./member.ts";
import type { DropReason } from "./net.ts";

/** Counts drops into `stats` and says what an operator must hear of. */
export class Drops {
  /** When the last wrong-key warning was logged, and the drops since. */
  #keyWarnedAt = -Infinity;
  #keyDropsSinceWarn = 0;

  constructor(
    private readonly stats: Stats,
    private readonly cfg: Pick<Config, "logger" | "keyring">,
    private readonly clock: Clock,
  ) {}

  /** Count a dropped packet or stream from `from` (and log handler failures and wrong keys). */
  drop(reason: DropReason, e?: unknown, from?: string): void {
    this.stats.droppedPackets[reason]++;
    if (reason === "internal") {
      this.cfg.logger?.("warn", "gossip handler failed", { error: String(e) });
    } else if (reason === "decrypt" || (reason === "malformed" && !this.cfg.keyring)) {
      // Without keys of our own, a member's encrypted gossip reads as malformed.
      this.#warnWrongKey(from);
    }
  }

  /**
   * Say that someone sends what none of our keys opens, at most once a minute: a member started
   * with other --gossip-keys (or none) otherwise only showed as a counter here, and its join
   * failed with a bare "stream closed" on its side.
   */
  #warnWrongKey(from?: string): void {
    this.#keyDropsSinceWarn++;
    const now = this.clock.now();
    if (now - this.#keyWarnedAt < 60_000) return;
    this.#keyWarnedAt = now;
    this.cfg.logger?.(
      "warn",
      this.cfg.keyring
        ? "dropped gossip that none of our keys opens: is a member running with other --gossip-keys (or none)?"
        : "dropped gossip this member cannot read: is a member running with --gossip-keys while this one runs without?",
      {
        from: from ?? "?",
        dropped: this.#keyDropsSinceWarn,
        keys: this.cfg.keyring?.keys.length ?? 0,
      },
    );
    this.#keyDropsSinceWarn = 0;
  }
}
