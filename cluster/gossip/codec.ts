/**
 * Binary encoding of every gossip message. One type byte, then fixed-width integers
 * (big-endian) and length-prefixed strings/bytes. Decoding checks every length against the
 * buffer and throws {@linkcode DecodeError} on anything malformed; the receive loop catches it,
 * counts the packet as dropped and carries on.
 *
 * @module
 */

/** Thrown when a packet or stream frame cannot be decoded; never escapes the receive loop. */
export class DecodeError extends Error {
  /** @param message what was wrong with the bytes */
  constructor(message: string) {
    super(message);
    this.name = "DecodeError";
  }
}

/** Message type tags: the first byte of every encoded message. */
export const MsgType = {
  ping: 1,
  indirectPing: 2,
  ack: 3,
  nack: 4,
  suspect: 5,
  alive: 6,
  dead: 7,
  user: 8,
  compound: 9,
  pushPull: 10,
  error: 11,
  digest: 12,
  delta: 13,
} as const;

/** Member status as carried in push-pull state. */
export type NodeStatus = "alive" | "suspect" | "dead" | "left";
const STATUS: NodeStatus[] = ["alive", "suspect", "dead", "left"];

/** Direct probe; `target` is the id the sender believes lives at this address. */
export interface PingMsg {
  type: "ping";
  seq: number;
  target: string;
  sourceId: string;
  sourceAddr: string;
}
/** Ask a relay to probe `target` for us (SWIM indirect probe); `nack` asks for a nack on timeout. */
export interface IndirectPingMsg {
  type: "indirectPing";
  seq: number;
  target: string;
  targetAddr: string;
  sourceId: string;
  sourceAddr: string;
  nack: boolean;
}
/** Answer to a ping (or a relayed one). */
export interface AckMsg {
  type: "ack";
  seq: number;
}
/** A relay could not reach the target in time (Lifeguard): proves the relay itself is fine. */
export interface NackMsg {
  type: "nack";
  seq: number;
}
/** `from` suspects `node` at `incarnation`. */
export interface SuspectMsg {
  type: "suspect";
  incarnation: number;
  node: string;
  from: string;
}
/** `node` is alive at `addr` with `meta`; a higher incarnation overrides older news. */
export interface AliveMsg {
  type: "alive";
  incarnation: number;
  node: string;
  addr: string;
  meta: Uint8Array;
}
/** `from` declares `node` dead; `from === node` means a graceful leave. */
export interface DeadMsg {
  type: "dead";
  incarnation: number;
  node: string;
  from: string;
}
/** An application broadcast, gossiped like membership news. */
export interface UserMsg {
  type: "user";
  data: Uint8Array;
}
/** Several encoded messages in one datagram. */
export interface CompoundMsg {
  type: "compound";
  parts: Uint8Array[];
}
/** One member's entry in a push-pull exchange. */
export interface PushNodeState {
  id: string;
  addr: string;
  incarnation: number;
  status: NodeStatus;
  meta: Uint8Array;
}
/** Full state, exchanged over a stream (anti-entropy and join). */
export interface PushPullMsg {
  type: "pushPull";
  join: boolean;
  from: string;
  nodes: PushNodeState[];
}
/** One member's version in a digest: enough to tell whether two views differ. */
export interface DigestEntry {
  id: string;
  incarnation: number;
  status: NodeStatus;
  /** FNV-1a of address and metadata: catches a change that kept the incarnation. */
  hash: number;
}
/** Periodic anti-entropy, step 1: the initiator's view as versions only (~20 bytes a member). */
export interface DigestMsg {
  type: "digest";
  from: string;
  entries: DigestEntry[];
}
/**
 * Step 2: the responder's full entries where the views differ, and the ids it wants in full.
 * Step 3 is a `pushPull` carrying just the wanted entries.
 */
export interface DeltaMsg {
  type: "delta";
  from: string;
  nodes: PushNodeState[];
  want: string[];
}
/** A stream peer refused the request (e.g. a duplicate node id on join). */
export interface ErrorMsg {
  type: "error";
  code: string;
  message: string;
}

/** Every message the protocol speaks. */
export type Message =
  | PingMsg
  | IndirectPingMsg
  | AckMsg
  | NackMsg
  | SuspectMsg
  | AliveMsg
  | DeadMsg
  | UserMsg
  | CompoundMsg
  | PushPullMsg
  | DigestMsg
  | DeltaMsg
  | ErrorMsg;

const te = new TextEncoder();

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) >= 0x80) return false;
  return true;
}
const td = new TextDecoder("utf-8", { fatal: true });

/** Growable byte writer. */
export class Writer {
  private buf: Uint8Array;
  private view: DataView;
  /** @param capacity initial buffer size */
  constructor(capacity = 128) {
    this.buf = new Uint8Array(capacity);
    this.view = new DataView(this.buf.buffer);
  }
  /** Bytes written so far. */
  length = 0;

  private ensure(n: number) {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  /** Append one byte. */
  u8(v: number): this {
    this.ensure(1);
    this.buf[this.length++] = v;
    return this;
  }
  /** Append a big-endian u16. */
  u16(v: number): this {
    this.ensure(2);
    this.view.setUint16(this.length, v);
    this.length += 2;
    return this;
  }
  /** Append a big-endian u32. */
  u32(v: number): this {
    // Never wrap silently: an incarnation past 2^32 written as 0 would be ignored by every peer.
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
      throw new RangeError(`u32 field out of range: ${v}`);
    }
    this.ensure(4);
    this.view.setUint32(this.length, v);
    this.length += 4;
    return this;
  }
  /** Append a u64 from a non-negative safe integer. */
  u64(v: number): this {
    this.ensure(8);
    this.view.setBigUint64(this.length, BigInt(Math.floor(v)));
    this.length += 8;
    return this;
  }
  /** Append raw bytes. */
  raw(b: Uint8Array): this {
    this.ensure(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
    return this;
  }
  /** Append a u8-length-prefixed UTF-8 string (≤ 255 bytes). */
  str8(s: string): this {
    if (s.length <= 255 && isAscii(s)) {
      // fast path: ids and addresses are ASCII
      this.ensure(1 + s.length);
      this.buf[this.length++] = s.length;
      for (let i = 0; i < s.length; i++) this.buf[this.length++] = s.charCodeAt(i);
      return this;
    }
    const b = te.encode(s);
    if (b.length > 255) {
      throw new RangeError(`string "${s.slice(0, 32)}…" is ${b.length} bytes; limit 255`);
    }
    return this.u8(b.length).raw(b);
  }
  /** Append u16-length-prefixed bytes (≤ 65535). */
  bytes16(b: Uint8Array): this {
    if (b.length > 0xffff) throw new RangeError(`field is ${b.length} bytes; limit 65535`);
    return this.u16(b.length).raw(b);
  }
  /** The written bytes (a copy-free view). */
  finish(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }
}

/** Bounds-checked byte reader; every read past the end throws {@linkcode DecodeError}. */
export class Reader {
  private view: DataView;
  /** Read position. */
  pos = 0;
  /** @param buf bytes to read */
  constructor(private readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  private need(n: number, what: string) {
    if (this.pos + n > this.buf.length) {
      throw new DecodeError(
        `truncated ${what}: need ${n} bytes at offset ${this.pos}, have ${
          this.buf.length - this.pos
        }`,
      );
    }
  }
  /** Read one byte. */
  u8(what = "u8"): number {
    this.need(1, what);
    return this.buf[this.pos++];
  }
  /** Read a big-endian u16. */
  u16(what = "u16"): number {
    this.need(2, what);
    const v = this.view.getUint16(this.pos);
    this.pos += 2;
    return v;
  }
  /** Read a big-endian u32. */
  u32(what = "u32"): number {
    this.need(4, what);
    const v = this.view.getUint32(this.pos);
    this.pos += 4;
    return v;
  }
  /** Read a u64 that must fit a safe integer. */
  u64(what = "u64"): number {
    this.need(8, what);
    const v = this.view.getBigUint64(this.pos);
    this.pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new DecodeError(`${what} ${v} exceeds 2^53`);
    return Number(v);
  }
  /**
   * Read n raw bytes as a view into the input (no copy: most gossip is old news and is dropped;
   * whoever keeps bytes copies them).
   */
  raw(n: number, what = "bytes"): Uint8Array {
    this.need(n, what);
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  /** Read a u8-length-prefixed UTF-8 string. */
  str8(what = "string"): string {
    const n = this.u8(what);
    this.need(n, what);
    let ascii = true;
    for (let i = this.pos; i < this.pos + n; i++) {
      if (this.buf[i] >= 0x80) {
        ascii = false;
        break;
      }
    }
    if (ascii) {
      const s = String.fromCharCode.apply(
        null,
        this.buf.subarray(this.pos, this.pos + n) as unknown as number[],
      );
      this.pos += n;
      return s;
    }
    try {
      return td.decode(this.buf.subarray(this.pos, this.pos + n));
    } catch {
      throw new DecodeError(`${what} is not valid UTF-8`);
    } finally {
      this.pos += n;
    }
  }
  /** Read u16-length-prefixed bytes. */
  bytes16(what = "bytes"): Uint8Array {
    return this.raw(this.u16(what), what);
  }
  /** Bytes left unread. */
  remaining(): number {
    return this.buf.length - this.pos;
  }
  /** Throw unless everything was consumed (trailing garbage is malformed). */
  end(what: string) {
    if (this.pos !== this.buf.length) {
      throw new DecodeError(`${this.buf.length - this.pos} trailing bytes after ${what}`);
    }
  }
}

/** Largest number of parts in a compound (one byte count). */
export const MAX_COMPOUND_PARTS = 255;

/**
 * Encode one message.
 *
 * @example
 * ```ts
 * const bytes = encode({ type: "ack", seq: 7 });
 * decode(bytes); // { type: "ack", seq: 7 }
 * ```
 */
export function encode(m: Message): Uint8Array {
  const w = new Writer().u8(MsgType[m.type]);
  switch (m.type) {
    case "ping":
      w.u32(m.seq).str8(m.target).str8(m.sourceId).str8(m.sourceAddr);
      break;
    case "indirectPing":
      w.u32(m.seq).str8(m.target).str8(m.targetAddr).str8(m.sourceId).str8(m.sourceAddr)
        .u8(m.nack ? 1 : 0);
      break;
    case "ack":
    case "nack":
      w.u32(m.seq);
      break;
    case "suspect":
    case "dead":
      w.u32(m.incarnation).str8(m.node).str8(m.from);
      break;
    case "alive":
      w.u32(m.incarnation).str8(m.node).str8(m.addr).bytes16(m.meta);
      break;
    case "user":
      w.bytes16(m.data);
      break;
    case "compound":
      if (m.parts.length > MAX_COMPOUND_PARTS) throw new RangeError("too many compound parts");
      w.u8(m.parts.length);
      for (const p of m.parts) w.bytes16(p);
      break;
    case "pushPull":
      w.u8(m.join ? 1 : 0).str8(m.from).u32(m.nodes.length);
      for (const n of m.nodes) {
        w.str8(n.id).str8(n.addr).u32(n.incarnation).u8(STATUS.indexOf(n.status)).bytes16(n.meta);
      }
      break;
    case "error":
      w.str8(m.code).bytes16(te.encode(m.message));
      break;
    case "digest":
      w.str8(m.from).u32(m.entries.length);
      for (const e of m.entries) {
        w.str8(e.id).u32(e.incarnation).u8(STATUS.indexOf(e.status)).u32(e.hash);
      }
      break;
    case "delta":
      w.str8(m.from).u32(m.nodes.length);
      for (const n of m.nodes) {
        w.str8(n.id).str8(n.addr).u32(n.incarnation).u8(STATUS.indexOf(n.status)).bytes16(n.meta);
      }
      w.u32(m.want.length);
      for (const id of m.want) w.str8(id);
      break;
  }
  return w.finish();
}

/** Decode one message; throws {@linkcode DecodeError} on any malformed input. */
export function decode(buf: Uint8Array): Message {
  const r = new Reader(buf);
  const tag = r.u8("message type");
  let m: Message;
  switch (tag) {
    case MsgType.ping:
      m = {
        type: "ping",
        seq: r.u32("seq"),
        target: r.str8("target"),
        sourceId: r.str8("source id"),
        sourceAddr: r.str8("source addr"),
      };
      break;
    case MsgType.indirectPing:
      m = {
        type: "indirectPing",
        seq: r.u32("seq"),
        target: r.str8("target"),
        targetAddr: r.str8("target addr"),
        sourceId: r.str8("source id"),
        sourceAddr: r.str8("source addr"),
        nack: r.u8("nack flag") === 1,
      };
      break;
    case MsgType.ack:
      m = { type: "ack", seq: r.u32("seq") };
      break;
    case MsgType.nack:
      m = { type: "nack", seq: r.u32("seq") };
      break;
    case MsgType.suspect:
    case MsgType.dead:
      m = {
        type: tag === MsgType.suspect ? "suspect" : "dead",
        incarnation: r.u32("incarnation"),
        node: r.str8("node"),
        from: r.str8("from"),
      };
      break;
    case MsgType.alive:
      m = {
        type: "alive",
        incarnation: r.u32("incarnation"),
        node: r.str8("node"),
        addr: r.str8("addr"),
        meta: r.bytes16("meta"),
      };
      break;
    case MsgType.user:
      m = { type: "user", data: r.bytes16("user data") };
      break;
    case MsgType.compound: {
      const n = r.u8("part count");
      const parts: Uint8Array[] = [];
      for (let i = 0; i < n; i++) parts.push(r.bytes16("compound part"));
      m = { type: "compound", parts };
      break;
    }
    case MsgType.pushPull: {
      const join = r.u8("join flag") === 1;
      const from = r.str8("from");
      const nodes = readNodes(r);
      m = { type: "pushPull", join, from, nodes };
      break;
    }
    case MsgType.digest: {
      const from = r.str8("from");
      const count = r.u32("entry count");
      if (count * 10 > r.remaining()) {
        throw new DecodeError(`digest claims ${count} entries in ${r.remaining()} bytes`);
      }
      const entries: DigestEntry[] = [];
      for (let i = 0; i < count; i++) {
        const id = r.str8("node id");
        const incarnation = r.u32("incarnation");
        const st = r.u8("status");
        if (st >= STATUS.length) throw new DecodeError(`unknown node status ${st}`);
        entries.push({ id, incarnation, status: STATUS[st], hash: r.u32("hash") });
      }
      m = { type: "digest", from, entries };
      break;
    }
    case MsgType.delta: {
      const from = r.str8("from");
      const nodes = readNodes(r);
      const n = r.u32("want count");
      if (n > r.remaining()) {
        throw new DecodeError(`delta wants ${n} ids in ${r.remaining()} bytes`);
      }
      const want: string[] = [];
      for (let i = 0; i < n; i++) want.push(r.str8("wanted id"));
      m = { type: "delta", from, nodes, want };
      break;
    }
    case MsgType.error:
      m = {
        type: "error",
        code: r.str8("error code"),
        message: new TextDecoder().decode(r.bytes16("error message")),
      };
      break;
    default:
      throw new DecodeError(`unknown message type ${tag}`);
  }
  r.end(m.type);
  return m;
}

function readNodes(r: Reader): PushNodeState[] {
  const count = r.u32("node count");
  // Each entry is at least 9 bytes; refuse counts the buffer cannot hold before allocating.
  if (count * 9 > r.remaining()) {
    throw new DecodeError(`push-pull claims ${count} nodes in ${r.remaining()} bytes`);
  }
  const nodes: PushNodeState[] = [];
  for (let i = 0; i < count; i++) {
    const id = r.str8("node id");
    const addr = r.str8("node addr");
    const incarnation = r.u32("incarnation");
    const s = r.u8("status");
    if (s >= STATUS.length) throw new DecodeError(`unknown node status ${s}`);
    nodes.push({ id, addr, incarnation, status: STATUS[s], meta: r.bytes16("meta") });
  }
  return nodes;
}

/** Bytes a compound adds around its parts: type + count, then 2 bytes per part. */
export const COMPOUND_HEADER = 2;
/** Per-part overhead inside a compound (the u16 length). */
export const COMPOUND_PART_OVERHEAD = 2;
