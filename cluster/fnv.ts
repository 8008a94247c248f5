/**
 * 32-bit FNV-1a over a string's UTF-8 bytes: the cheap, stable hash the cluster derives the same
 * way on every agent (placement epochs, a head's own order among replicas).
 *
 * @module
 */

const enc = new TextEncoder();

/** 32-bit FNV-1a of `text`'s UTF-8 bytes, unsigned. */
export function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (const b of enc.encode(text)) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h;
}
