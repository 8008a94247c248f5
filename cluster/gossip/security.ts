/**
 * AES-256-GCM sealing of every datagram and stream frame:
 * `version(1) | nonce(12) | ciphertext | tag(16)`. The version byte, followed by the caller's
 * `aad` (the cluster-name header, `label.ts`), is the additional authenticated data, so neither
 * can be flipped, stripped or rewritten. `node:crypto` is used because it is synchronous,
 * which keeps the packet path free of awaits (and the simulator deterministic).
 *
 * @module
 */
import { createCipheriv, createDecipheriv, randomFillSync } from "node:crypto";

/** Wire format version of sealed packets. */
export const ENCRYPTION_VERSION = 1;
/** GCM nonce length. */
export const NONCE_SIZE = 12;
/** GCM tag length. */
export const TAG_SIZE = 16;
/** Bytes sealing adds to a payload. */
export const ENCRYPTION_OVERHEAD = 1 + NONCE_SIZE + TAG_SIZE;
/** AES-256 key length. */
export const KEY_SIZE = 32;

/** Why a sealed packet was refused. */
export class DecryptError extends Error {
  /** @param reason short reason, used as a drop counter label */
  constructor(readonly reason: "short" | "version" | "auth", message: string) {
    super(message);
    this.name = "DecryptError";
  }
}

/** The version byte, then the caller's bytes: what GCM authenticates beside the ciphertext. */
function additionalData(aad: Uint8Array): Uint8Array {
  const out = new Uint8Array(1 + aad.length);
  out[0] = ENCRYPTION_VERSION;
  out.set(aad, 1);
  return out;
}

/**
 * Seal `plain` with `key` (32 bytes) under a fresh random nonce; `aad` is authenticated, not
 * sent: the opener must pass the same bytes.
 *
 * @example
 * ```ts
 * const key = crypto.getRandomValues(new Uint8Array(32));
 * const sealed = encrypt(key, new TextEncoder().encode("hi"));
 * decrypt([key], sealed); // "hi" bytes
 * ```
 */
export function encrypt(
  key: Uint8Array,
  plain: Uint8Array,
  aad: Uint8Array = new Uint8Array(),
): Uint8Array {
  const out = new Uint8Array(ENCRYPTION_OVERHEAD + plain.length);
  out[0] = ENCRYPTION_VERSION;
  const nonce = out.subarray(1, 1 + NONCE_SIZE);
  randomFillSync(nonce);
  const c = createCipheriv("aes-256-gcm", key, nonce);
  c.setAAD(additionalData(aad));
  const ct = c.update(plain);
  c.final();
  out.set(ct, 1 + NONCE_SIZE);
  out.set(c.getAuthTag(), 1 + NONCE_SIZE + plain.length);
  return out;
}

/**
 * Open a sealed packet sealed with the same `aad`, trying every key; throws {@linkcode
 * DecryptError} if none fits.
 */
export function decrypt(
  keys: readonly Uint8Array[],
  sealed: Uint8Array,
  aad: Uint8Array = new Uint8Array(),
): Uint8Array {
  if (sealed.length < ENCRYPTION_OVERHEAD) {
    throw new DecryptError(
      "short",
      `sealed packet is ${sealed.length} bytes, shorter than the ${ENCRYPTION_OVERHEAD}-byte envelope`,
    );
  }
  if (sealed[0] !== ENCRYPTION_VERSION) {
    throw new DecryptError("version", `unknown encryption version ${sealed[0]}`);
  }
  const nonce = sealed.subarray(1, 1 + NONCE_SIZE);
  const ct = sealed.subarray(1 + NONCE_SIZE, sealed.length - TAG_SIZE);
  const tag = sealed.subarray(sealed.length - TAG_SIZE);
  const ad = additionalData(aad);
  for (const key of keys) {
    try {
      const d = createDecipheriv("aes-256-gcm", key, nonce);
      d.setAAD(ad);
      d.setAuthTag(tag);
      const plain = d.update(ct);
      d.final();
      return new Uint8Array(plain.buffer, plain.byteOffset, plain.byteLength);
    } catch {
      // wrong key: try the next one
    }
  }
  throw new DecryptError(
    "auth",
    `no key in the keyring (${keys.length} tried) authenticates this packet`,
  );
}
