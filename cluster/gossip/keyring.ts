/**
 * The keyring: one primary key that seals outgoing traffic, plus older or newer keys that are
 * still accepted. Rotation without downtime: add the new key everywhere, make it primary
 * everywhere, then remove the old one.
 *
 * @module
 */
import { KEY_SIZE } from "./security.ts";

/** A key operation that cannot be done; the message says why. */
export class KeyringError extends Error {
  /** @param message what is wrong */
  constructor(message: string) {
    super(message);
    this.name = "KeyringError";
  }
}

function check(key: Uint8Array) {
  if (key.length !== KEY_SIZE) {
    throw new KeyringError(`gossip keys must be ${KEY_SIZE} bytes (AES-256); got ${key.length}`);
  }
}

function same(a: Uint8Array, b: Uint8Array) {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/**
 * Primary key first, then the others; all are tried when opening a packet.
 *
 * @example
 * ```ts
 * const ring = new Keyring(oldKey);
 * ring.addKey(newKey);   // on every node
 * ring.useKey(newKey);   // then on every node
 * ring.removeKey(oldKey); // then on every node
 * ```
 */
export class Keyring {
  private list: Uint8Array[];

  /** @param primary the key that seals outgoing traffic; @param others also accepted */
  constructor(primary: Uint8Array, others: Uint8Array[] = []) {
    check(primary);
    others.forEach(check);
    this.list = [primary.slice(), ...others.filter((k) => !same(k, primary)).map((k) => k.slice())];
  }

  /** Parse a base64 key (as in `DLLM_GOSSIP_KEY`). */
  static parseKey(b64: string): Uint8Array {
    let k: Uint8Array;
    try {
      k = Uint8Array.from(atob(b64.trim()), (c) => c.charCodeAt(0));
    } catch {
      throw new KeyringError(
        "gossip key is not valid base64; generate one with `openssl rand -base64 32`",
      );
    }
    check(k);
    return k;
  }

  /** The key that seals outgoing packets. */
  get primary(): Uint8Array {
    return this.list[0];
  }

  /** All keys, primary first (the order they are tried in). */
  get keys(): readonly Uint8Array[] {
    return this.list;
  }

  /** Accept packets sealed with `key` too. */
  addKey(key: Uint8Array): void {
    check(key);
    if (!this.list.some((k) => same(k, key))) this.list.push(key.slice());
  }

  /** Seal outgoing traffic with `key` (added first if new). */
  useKey(key: Uint8Array): void {
    this.addKey(key);
    this.list = [this.list.find((k) => same(k, key))!, ...this.list.filter((k) => !same(k, key))];
  }

  /** Stop accepting `key`; the primary cannot be removed (switch first). */
  removeKey(key: Uint8Array): void {
    if (same(key, this.list[0])) {
      throw new KeyringError(
        "cannot remove the primary gossip key; make another key primary first",
      );
    }
    this.list = this.list.filter((k) => !same(k, key));
  }
}
