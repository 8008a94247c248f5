/**
 * The agent's setting values as text or JSON gives them, parsed and checked: sizes, seed lists,
 * hosts. Each throws (or calls `fail`) with what is wrong; agent_config.ts names the setting.
 *
 * @module
 */
import { isIP } from "node:net";

/** Parse "4GiB", "512MB", "1.5G", "1073741824" into bytes. */
export function parseBytes(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$/i.exec(text);
  if (!m) throw new Error(`"${text}" is not a size (e.g. 4GiB, 512MB, 1073741824)`);
  const exp = " kmgt".indexOf(m[2].toLowerCase() || " ");
  const base = m[3] ? 1024 : 1000;
  const bytes = Math.round(Number(m[1]) * base ** exp);
  // Past 2^53 bytes a count is no longer exact (and gossip's metadata refused it, blaming the
  // model's file name); 8 PiB is far beyond any machine's memory anyway.
  if (!Number.isSafeInteger(bytes)) {
    throw new Error(`"${text}" is more than 8 PiB (2^53 − 1 bytes), the largest size taken`);
  }
  return bytes;
}

/**
 * Check gossip seeds: "host:port", "[v6]:port" or a bare host (the default gossip port). A port
 * out of range or not a number is refused at start: before, "10.0.0.1:99999" was read as an
 * IPv6 host and retried forever.
 */
export function seedList(seeds: string[], fail: (why: string) => never): string[] {
  for (const s of seeds) {
    // "a:1 b:1" (a space for a comma) or "http://a:1" was taken as a bare IPv6 host and
    // retried forever.
    if (/[\s/]/.test(s)) {
      fail(`"${s}" is not host:port (separate seeds with commas; no scheme or path)`);
    }
    const bracketed = /^\[([^\]]+)\](?::(.*))?$/.exec(s);
    const colons = s.split(":").length - 1;
    if (!bracketed && colons > 1 && isIP(s) !== 6) {
      fail(`"${s}" is not host:port (an IPv6 address with a port is [addr]:port)`);
    }
    // A bare IPv6 address (several colons, no brackets) names a host only.
    const port = bracketed ? bracketed[2] : colons === 1 ? s.slice(s.indexOf(":") + 1) : undefined;
    const host = bracketed ? bracketed[1] : colons === 1 ? s.slice(0, s.indexOf(":")) : s;
    if (!host) fail(`"${s}" names no host`);
    if (port !== undefined && !(/^\d{1,5}$/.test(port) && +port >= 1 && +port <= 65535)) {
      fail(`"${s}": the port must be a number from 1 to 65535`);
    }
  }
  return seeds;
}

/** Longest duration a setting takes: a timer's bound, 2^31 − 1 ms (~24.8 days). */
export const MAX_DURATION_MS = 2 ** 31 - 1;

/**
 * Bytes from a setting: text as parseBytes reads it, or a JSON number that is a whole count (a
 * config file's 1.5 or 1e309 was taken, and failed later blaming the model's file name).
 */
export function bytesOf(v: unknown): number {
  if (typeof v !== "number") return parseBytes(String(v));
  if (!Number.isSafeInteger(v) || v < 0) {
    throw new Error(`${v} is not a whole number of bytes from 0 to 2^53 − 1`);
  }
  return v;
}

/**
 * Check a host setting (`--advertise-address`, `--bind`): an IP address or a DNS name, no port,
 * no spaces; `what` says what it is for in the error. A bad advertised one ("127.0.0.1:5", "a b",
 * "") was advertised as is: peers could not reach the agent, and it flapped alive, suspect and
 * dead, the cluster re-planning at every turn.
 */
export function hostSetting(
  v: string | undefined,
  what: string,
  fail: (why: string) => never,
): string | undefined {
  if (v === undefined) return undefined;
  const host = v.trim();
  const ipv6 = host.includes(":") && isIP(host.replace(/^\[|\]$/g, "")) === 6;
  if (ipv6) return host.replace(/^\[|\]$/g, "");
  if (isIP(host) === 4) return host;
  if (
    !/^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/
      .test(host)
  ) {
    fail(`"${v}" is not ${what} (an IP address or a DNS name, without a port)`);
  }
  return host;
}
