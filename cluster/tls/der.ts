/**
 * Just enough ASN.1 DER to write X.509 certificates and read back the few fields we need
 * (subject name, public key) — no dependency, every byte visible. Encoders return complete
 * TLV byte arrays; composite encoders take already-encoded children.
 *
 * @module
 */

/** Concatenate byte arrays. */
export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function length(n: number): Uint8Array {
  if (n < 0x80) return Uint8Array.of(n);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Uint8Array.of(0x80 | bytes.length, ...bytes);
}

/** A TLV with the given tag byte and content. */
export function tlv(tag: number, content: Uint8Array): Uint8Array {
  return concat([Uint8Array.of(tag), length(content.length), content]);
}

/** SEQUENCE of encoded children. */
export const sequence = (...children: Uint8Array[]): Uint8Array => tlv(0x30, concat(children));
/** SET of encoded children (callers pass one child, so DER's sort order holds trivially). */
export const set = (...children: Uint8Array[]): Uint8Array => tlv(0x31, concat(children));
/** BOOLEAN. */
export const boolean = (v: boolean): Uint8Array => tlv(0x01, Uint8Array.of(v ? 0xff : 0));
/** OCTET STRING. */
export const octetString = (b: Uint8Array): Uint8Array => tlv(0x04, b);
/** UTF8String. */
export const utf8String = (s: string): Uint8Array => tlv(0x0c, new TextEncoder().encode(s));
/** BIT STRING whose length is a whole number of bytes. */
export const bitString = (b: Uint8Array): Uint8Array => tlv(0x03, concat([Uint8Array.of(0), b]));
/** Context-specific constructed tag [n] (EXPLICIT wrapping). */
export const explicit = (n: number, child: Uint8Array): Uint8Array => tlv(0xa0 | n, child);
/** Context-specific primitive tag [n] (IMPLICIT primitive, e.g. GeneralName choices). */
export const implicitPrimitive = (n: number, content: Uint8Array): Uint8Array =>
  tlv(0x80 | n, content);

/** INTEGER from unsigned big-endian bytes (a leading zero is added when the top bit is set). */
export function unsignedInteger(bytes: Uint8Array): Uint8Array {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0 && bytes[i + 1] < 0x80) i++;
  const b = bytes.subarray(i);
  return tlv(0x02, b[0] >= 0x80 ? concat([Uint8Array.of(0), b]) : b);
}

/** INTEGER from a small non-negative number. */
export function smallInteger(n: number): Uint8Array {
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return unsignedInteger(Uint8Array.from(bytes.length ? bytes : [0]));
}

/** OBJECT IDENTIFIER from dotted form, e.g. "2.5.4.3". */
export function oid(dotted: string): Uint8Array {
  const arcs = dotted.split(".").map(Number);
  const out = [40 * arcs[0] + arcs[1]];
  for (const arc of arcs.slice(2)) {
    const chunk = [arc & 0x7f];
    for (let v = Math.floor(arc / 128); v > 0; v = Math.floor(v / 128)) {
      chunk.unshift(0x80 | (v & 0x7f));
    }
    out.push(...chunk);
  }
  return tlv(0x06, Uint8Array.from(out));
}

/**
 * A named-bit-list BIT STRING (e.g. KeyUsage) from bit numbers, bit 0 being the most
 * significant bit of the first byte; trailing zero bits are dropped as DER requires.
 */
export function namedBits(bits: number[]): Uint8Array {
  const top = Math.max(...bits);
  const bytes = new Uint8Array(Math.floor(top / 8) + 1);
  for (const b of bits) bytes[b >> 3] |= 0x80 >> (b & 7);
  const unused = 7 - (top & 7);
  return tlv(0x03, concat([Uint8Array.of(unused), bytes]));
}

/** UTCTime before 2050, GeneralizedTime from 2050 on (RFC 5280 §4.1.2.5). */
export function time(d: Date): Uint8Array {
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  const rest = `${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}${p(d.getUTCHours())}` +
    `${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}Z`;
  const y = d.getUTCFullYear();
  const enc = new TextEncoder();
  return y < 2050
    ? tlv(0x17, enc.encode(`${p(y % 100)}${rest}`))
    : tlv(0x18, enc.encode(`${p(y, 4)}${rest}`));
}

/** One parsed TLV: tag, content and the whole encoding. */
export interface Node {
  /** Tag byte. */
  tag: number;
  /** Content bytes. */
  content: Uint8Array;
  /** Tag + length + content. */
  raw: Uint8Array;
}

/** Parse the TLV at `at` in `buf`; throws on truncated or multi-byte-tag input. */
export function parse(buf: Uint8Array, at = 0): Node {
  if (at + 2 > buf.length) throw new Error("DER: truncated");
  const tag = buf[at];
  if ((tag & 0x1f) === 0x1f) throw new Error("DER: multi-byte tags are not supported");
  let len = buf[at + 1];
  let head = 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw new Error("DER: bad length");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[at + 2 + i];
    head += n;
  }
  if (at + head + len > buf.length) throw new Error("DER: truncated");
  return {
    tag,
    content: buf.subarray(at + head, at + head + len),
    raw: buf.subarray(at, at + head + len),
  };
}

/** Parse the children of a constructed node. */
export function children(node: Node): Node[] {
  const out: Node[] = [];
  for (let at = 0; at < node.content.length;) {
    const c = parse(node.content, at);
    out.push(c);
    at += c.raw.length;
  }
  return out;
}
