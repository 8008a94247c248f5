/**
 * Member metadata: what every agent tells the cluster about itself, binary-encoded into at
 * most {@linkcode MAX_METADATA_BYTES} so it fits, with room to spare, in one gossip datagram.
 * A change travels as an `alive` message with a higher incarnation.
 *
 * @module
 */
import { DecodeError, Reader, Writer } from "./codec.ts";

/** Hard limit on encoded metadata: one alive message must fit a 1400-byte datagram. */
export const MAX_METADATA_BYTES = 512;

/** Bit 0 of the trailing flags byte: the member is drained (NodeMetadata.drained). */
const FLAG_DRAINED = 1;
/** Bit 1: its HTTP API serves HTTPS (NodeMetadata.apiTls). */
const FLAG_API_TLS = 2;
const FORMAT_VERSION = 1;

/** Compute resources an agent offers. */
export interface Resources {
  /** Memory available for model weights, bytes. */
  memoryBytes: number;
  /** CPU cores. */
  cores: number;
  /** Kernel backend name (e.g. "webgpu", "wasm"). */
  backend: string;
  /** Adapter description (GPU name, or "" for none). */
  adapter: string;
  /** Start-up calibration: matvec GFLOP/s on the chosen backend (placement weights by it). */
  speed?: number;
  /** Compute threads the backend uses (0 = unknown). */
  threads?: number;
  /** Physical memory of the machine, bytes (0 = unknown). */
  memoryTotal?: number;
}

/** The model and layer range [from, to) an agent hosts. */
export interface HostedLayers {
  /** Model name. */
  model: string;
  /** First layer hosted (inclusive). */
  from: number;
  /** Layer after the last one hosted (exclusive). */
  to: number;
}

/** A stage's load, published for routing (cluster/pipeline/gossip_chain.ts chooseReplica). */
export interface StageLoad {
  /** Sessions open on the stage. */
  sessions: number;
  /** Frames waiting for (or in) its current pass. */
  queued: number;
  /** Sessions it can still open (free KV cache slots). */
  free: number;
  /** Token rows it processed per second recently. */
  tokensPerSecond: number;
}

/** Everything a member advertises. */
export interface NodeMetadata {
  /** Node id; must equal the member's gossip id. */
  id: string;
  /** Addresses peers can reach this agent's services on (host or IP, no port). */
  addresses: string[];
  /** gRPC/Connect port. */
  rpcPort: number;
  /** Prometheus metrics port. */
  metricsPort: number;
  /** Compute resources. */
  resources: Resources;
  /** Hosted model layers, or null when none. */
  hosted: HostedLayers | null;
  /** Agent software version. */
  version: string;
  /** OpenAI-compatible HTTP port (0 = none). */
  httpPort?: number;
  /** Model this agent offers to host layers of ("" = none); placement runs over these. */
  model?: string;
  /** Why this agent's stage failed to load ("" = none); such an agent offers no model. */
  stageError?: string;
  /** The `--replicas` this agent asks for: 0 = auto, else a count (absent: 1, as before). */
  replicas?: number;
  /** The replica its hosted stage belongs to: the node id of that pipeline's first stage. */
  replica?: string;
  /** Its stage's load, for heads choosing a replica. */
  load?: StageLoad;
  /** Port of its TCP data plane: chunks and Forward streams without TLS (0 or absent: none). */
  dataPort?: number;
  /**
   * The KV cache a stage of this agent reserves per layer: positions (`--context-size`) for
   * `sessions` (`--max-sessions`). Placement plans with the largest any member announces.
   */
  kvReserve?: KvReserve;
  /**
   * Drained by `llmctl nodes drain` (or handing its layers over at shutdown): it has a model but
   * stops offering it, so placement leaves it out until the model is deployed again.
   */
  drained?: boolean;
  /**
   * Which life of the process this is: a nonce drawn at its start and the times it came back
   * from being declared dead (`<nonce>.<n>`). A copy of an announcement a killed process sent
   * before it died can revive it in gossip for a while (SWIM takes any higher incarnation); only
   * a new life (a restart, or a false death refuted) tells a head that a stage it saw fail is
   * worth trying again.
   */
  life?: string;
  /** Its HTTP API serves HTTPS (`--api-tls-cert`): agents forwarding to it use TLS. */
  apiTls?: boolean;
}

/** The KV cache reservation an agent plans its stages with. */
export interface KvReserve {
  /** Positions per session. */
  context: number;
  /** Sessions. */
  sessions: number;
}

/** Metadata that fails validation; the message names the field and the fix. */
export class MetadataError extends Error {
  /** @param message what is wrong and what to do */
  constructor(message: string) {
    super(message);
    this.name = "MetadataError";
  }
}

function checkPort(name: string, p: number) {
  if (!Number.isInteger(p) || p < 0 || p > 65535) {
    throw new MetadataError(`metadata ${name} ${p} is not a port number (0–65535)`);
  }
}

function checkStr(name: string, s: string) {
  const n = new TextEncoder().encode(s).length;
  if (n > 255) throw new MetadataError(`metadata ${name} is ${n} bytes; the limit is 255`);
}

/**
 * Check and encode metadata; throws {@linkcode MetadataError} naming the problem.
 *
 * @example
 * ```ts
 * const bytes = encodeMetadata({
 *   id: "gpu-1", addresses: ["10.0.0.5"], rpcPort: 7950, metricsPort: 9090,
 *   resources: { memoryBytes: 24e9, cores: 16, backend: "webgpu", adapter: "RTX 4090" },
 *   hosted: { model: "llama-3-8b", from: 0, to: 16 }, version: "0.1.0",
 * });
 * ```
 */
export function encodeMetadata(m: NodeMetadata): Uint8Array {
  if (!m.id) throw new MetadataError("metadata id is empty; set a node id");
  checkStr("id", m.id);
  if (m.addresses.length > 16) {
    throw new MetadataError(`metadata has ${m.addresses.length} addresses; the limit is 16`);
  }
  m.addresses.forEach((a, i) => checkStr(`addresses[${i}]`, a));
  checkPort("rpcPort", m.rpcPort);
  checkPort("metricsPort", m.metricsPort);
  const r = m.resources;
  if (!Number.isSafeInteger(r.memoryBytes) || r.memoryBytes < 0) {
    throw new MetadataError(
      `metadata resources.memoryBytes ${r.memoryBytes} must be a non-negative integer`,
    );
  }
  if (!Number.isInteger(r.cores) || r.cores < 0 || r.cores > 65535) {
    throw new MetadataError(`metadata resources.cores ${r.cores} must be an integer 0–65535`);
  }
  checkStr("resources.backend", r.backend);
  checkStr("resources.adapter", r.adapter);
  checkStr("version", m.version);
  checkStr("model", m.model ?? "");
  checkPort("httpPort", m.httpPort ?? 0);
  checkStr("stageError", m.stageError ?? "");
  const speed = Math.round((r.speed ?? 0) * 1000);
  if (!Number.isFinite(speed) || speed < 0) {
    throw new MetadataError(`metadata resources.speed ${r.speed} must be a finite number ≥ 0`);
  }
  if (m.hosted) {
    const h = m.hosted;
    checkStr("hosted.model", h.model);
    if (
      !Number.isInteger(h.from) || !Number.isInteger(h.to) || h.from < 0 || h.to > 65535 ||
      h.from > h.to
    ) {
      throw new MetadataError(
        `metadata hosted layers [${h.from}, ${h.to}) must satisfy 0 ≤ from ≤ to ≤ 65535`,
      );
    }
  }
  const w = new Writer().u8(FORMAT_VERSION).str8(m.id).u8(m.addresses.length);
  for (const a of m.addresses) w.str8(a);
  w.u16(m.rpcPort).u16(m.metricsPort).u64(r.memoryBytes).u16(r.cores).str8(r.backend).str8(
    r.adapter,
  );
  if (m.hosted) w.u8(1).str8(m.hosted.model).u16(m.hosted.from).u16(m.hosted.to);
  else w.u8(0);
  w.str8(m.version);
  // Agent fields: HTTP port, offered model, calibrated speed (GFLOP/s × 1000, saturating).
  w.u16(m.httpPort ?? 0).str8(m.model ?? "").u32(Math.min(speed, 0xffffffff));
  // Appended last and only when set, so metadata without them reads as before: the stage
  // error, then threads and machine memory (the error written, possibly empty, before them).
  // Then replica fields (setting, replica, load), which need the earlier ones written first;
  // then the data plane port, which needs the replica fields.
  if (m.dataPort !== undefined) checkPort("dataPort", m.dataPort);
  const kv = m.kvReserve;
  if (
    kv && (!Number.isInteger(kv.context) || kv.context < 0 || kv.context > 0xffffffff ||
      !Number.isInteger(kv.sessions) || kv.sessions < 0 || kv.sessions > 0xffff)
  ) {
    throw new MetadataError(
      `metadata kvReserve ${kv.context} positions × ${kv.sessions} sessions is out of range`,
    );
  }
  // The KV reservation comes after the data port, which is written (0 if none) before it; the
  // flags byte (drained, apiTls) after the reservation, written as 0 × 0 (read back as none) if unset.
  // The life string comes after the flags byte, which is written (0) when only the life is set.
  const life = m.life ?? "";
  checkStr("life", life);
  const flags = (m.drained ? FLAG_DRAINED : 0) | (m.apiTls ? FLAG_API_TLS : 0);
  const flagged = flags !== 0 || !!life;
  const kvOut = kv ?? (flagged ? { context: 0, sessions: 0 } : undefined);
  const data = !!m.dataPort || !!kvOut;
  const replicated = m.replicas !== undefined || !!m.replica || m.load !== undefined || data;
  const more = (r.threads ?? 0) > 0 || (r.memoryTotal ?? 0) > 0 || replicated;
  if (m.stageError || more) w.str8(m.stageError ?? "");
  if (more) w.u16(Math.min(r.threads ?? 0, 0xffff)).u64(r.memoryTotal ?? 0);
  if (replicated) {
    checkStr("replica", m.replica ?? "");
    const l = m.load ?? { sessions: 0, queued: 0, free: 0, tokensPerSecond: 0 };
    const u16 = (x: number) => Math.max(0, Math.min(0xffff, Math.round(x) || 0));
    w.u16(u16(m.replicas ?? 1)).str8(m.replica ?? "").u16(u16(l.sessions)).u16(u16(l.queued))
      .u16(u16(l.free)).u32(
        Math.max(0, Math.min(0xffffffff, Math.round(l.tokensPerSecond * 10) || 0)),
      );
  }
  if (data) w.u16(m.dataPort ?? 0);
  if (kvOut) w.u32(kvOut.context).u16(kvOut.sessions);
  if (flagged) w.u8(flags);
  if (life) w.str8(life);
  const out = w.finish();
  if (out.length > MAX_METADATA_BYTES) {
    throw new MetadataError(
      `metadata for "${m.id}" encodes to ${out.length} bytes; the limit is ${MAX_METADATA_BYTES} ` +
        `(shorten the adapter string, model name, version or address list)`,
    );
  }
  return out.slice();
}

/** Decode metadata; throws {@linkcode DecodeError} on malformed bytes. */
export function decodeMetadata(buf: Uint8Array): NodeMetadata {
  if (buf.length > MAX_METADATA_BYTES) {
    throw new DecodeError(`metadata is ${buf.length} bytes; the limit is ${MAX_METADATA_BYTES}`);
  }
  const r = new Reader(buf);
  const v = r.u8("metadata version");
  if (v !== FORMAT_VERSION) throw new DecodeError(`unknown metadata format ${v}`);
  const id = r.str8("id");
  const n = r.u8("address count");
  const addresses: string[] = [];
  for (let i = 0; i < n; i++) addresses.push(r.str8("address"));
  const rpcPort = r.u16("rpc port");
  const metricsPort = r.u16("metrics port");
  const resources: Resources = {
    memoryBytes: r.u64("memory"),
    cores: r.u16("cores"),
    backend: r.str8("backend"),
    adapter: r.str8("adapter"),
  };
  const has = r.u8("hosted flag");
  let hosted: HostedLayers | null = null;
  if (has === 1) {
    hosted = { model: r.str8("model"), from: r.u16("layer from"), to: r.u16("layer to") };
    // As encodeMetadata requires: [5, 1) became "-4 used layers", which no protobuf uint32
    // takes, and listing the nodes failed for as long as the member was remembered.
    if (hosted.from > hosted.to) {
      throw new DecodeError(`hosted layers [${hosted.from}, ${hosted.to}) run backwards`);
    }
  } else if (has !== 0) throw new DecodeError(`bad hosted flag ${has}`);
  const version = r.str8("version");
  const httpPort = r.u16("http port");
  const model = r.str8("model");
  resources.speed = r.u32("speed") / 1000;
  const stageError = r.remaining() > 0 ? r.str8("stage error") : "";
  if (r.remaining() > 0) {
    resources.threads = r.u16("threads");
    resources.memoryTotal = r.u64("memory total");
  }
  let replicated: Pick<NodeMetadata, "replicas" | "replica" | "load"> = {};
  if (r.remaining() > 0) {
    replicated = {
      replicas: r.u16("replicas"),
      replica: r.str8("replica"),
      load: {
        sessions: r.u16("sessions"),
        queued: r.u16("queued"),
        free: r.u16("free slots"),
        tokensPerSecond: r.u32("tokens per second") / 10,
      },
    };
  }
  const dataPort = r.remaining() > 0 ? r.u16("data port") : 0;
  const kv = r.remaining() > 0
    ? { context: r.u32("kv context"), sessions: r.u16("kv sessions") }
    : undefined;
  const kvReserve = kv && (kv.context > 0 || kv.sessions > 0) ? kv : undefined;
  // Bits this version does not know are a newer agent's: ignored, not refused.
  const flags = r.remaining() > 0 ? r.u8("flags") : 0;
  const drained = (flags & FLAG_DRAINED) !== 0;
  const apiTls = (flags & FLAG_API_TLS) !== 0;
  const life = r.remaining() > 0 ? r.str8("life") : "";
  // Fields after these are a newer agent's, appended as every field since the first was: read
  // past, not refused, so agents of two versions keep seeing each other during a rolling upgrade
  // (before, each new field made older agents refuse newer agents' metadata). The record is
  // bounded above (MAX_METADATA_BYTES).
  const meta = { id, addresses, rpcPort, metricsPort, resources, hosted, version, httpPort, model };
  return {
    ...(stageError ? { ...meta, stageError } : meta),
    ...replicated,
    ...(dataPort ? { dataPort } : {}),
    ...(kvReserve ? { kvReserve } : {}),
    ...(drained ? { drained } : {}),
    ...(life ? { life } : {}),
    ...(apiTls ? { apiTls } : {}),
  };
}

/** Minimal metadata for a node that has nothing to advertise yet. */
export function emptyMetadata(id: string): NodeMetadata {
  return {
    id,
    addresses: [],
    rpcPort: 0,
    metricsPort: 0,
    resources: { memoryBytes: 0, cores: 0, backend: "", adapter: "", speed: 0 },
    hosted: null,
    version: "",
    httpPort: 0,
    model: "",
  };
}
