/**
 * The manifest of a GGUF file: what a source computes once per file and every fetcher verifies
 * against. Segment 0 is the header `[0, dataOffset)`; then one segment per tensor, exactly its
 * byte range (padding between tensors is never transferred). Each segment is cut into chunks of
 * `chunkSize` bytes with a sha256 each, and has a sha256 of its own; the whole file's sha256 is
 * the cache's content address.
 *
 * With TLS on, the serialized manifest is signed with the node's TLS key; fetchers check the
 * signer's certificate against the cluster CA. Without TLS the manifest is plainly "unsigned".
 *
 * @example
 * ```ts
 * const { manifest } = await computeManifest("models/stories260K.gguf", { nodeId: "a" });
 * console.log(manifest.sha256, manifest.segments.length);
 * ```
 *
 * @module
 */
import { createHash, createPublicKey, sign, verify, X509Certificate } from "node:crypto";
import { Buffer } from "node:buffer";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import {
  type GetManifestResponse,
  GetManifestResponseSchema,
  type TransferManifest,
  TransferManifestSchema,
  TransferSegmentSchema,
} from "../../proto/mod.ts";
import { type GGUFFile, openGGUF } from "../../model/gguf/mod.ts";
import { modelFingerprint, ModelId } from "../model_id.ts";
import { chainLeaf, pemCertificates } from "../tls/files.ts";

/** Default chunk size: 1 MiB, small enough that a lost chunk costs little, big enough to stream. */
export const DEFAULT_CHUNK_SIZE = 1 << 20;
/** The name of segment 0. */
export const HEADER_SEGMENT = "(header)";
/** Signature scheme of a manifest served without TLS. */
export const UNSIGNED = "unsigned";

/** A manifest or signature that does not check out; never load bytes it describes. */
export class ManifestError extends Error {
  /** @param message what failed and what to do */
  constructor(message: string) {
    super(message);
    this.name = "ManifestError";
  }
}

/** sha256 of bytes. */
export function sha256(data: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha256").update(data).digest());
}

/** Lower-case hex of bytes. */
export function hex(b: Uint8Array): string {
  return Buffer.from(b).toString("hex");
}

/** Whether two byte arrays are equal. */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Number of chunks of a segment of `length` bytes. */
export function chunkCount(length: number, chunkSize: number): number {
  return Math.max(1, Math.ceil(length / chunkSize));
}

/**
 * Whether two manifests cut the file the same way: chunk size, sizes, and every segment's name,
 * range and hashes (the model id and source node may differ). The cache is addressed by the
 * file's sha256, which no fetcher can check (padding between tensors is never sent): bytes
 * verified against one table must not be served under another that claims the same sha256.
 */
export function sameSegments(a: TransferManifest, b: TransferManifest): boolean {
  if (
    a.sha256 !== b.sha256 || a.chunkSize !== b.chunkSize || a.fileSize !== b.fileSize ||
    a.dataOffset !== b.dataOffset || a.segments.length !== b.segments.length
  ) {
    return false;
  }
  return a.segments.every((s, i) => {
    const t = b.segments[i];
    return s.name === t.name && s.offset === t.offset && s.length === t.length &&
      sameBytes(s.sha256, t.sha256) && s.chunkSha256.length === t.chunkSha256.length &&
      s.chunkSha256.every((h, j) => sameBytes(h, t.chunkSha256[j]));
  });
}

/** Options of {@linkcode computeManifest}. */
export interface ManifestOptions {
  /** The computing node (recorded in the manifest). */
  nodeId: string;
  /** Bytes per chunk; default {@linkcode DEFAULT_CHUNK_SIZE}. */
  chunkSize?: number;
}

/**
 * Read `path` once and describe it: the header and every tensor as a segment with per-chunk and
 * per-segment sha256, plus the whole file's sha256.
 */
export async function computeManifest(
  path: string,
  opts: ManifestOptions,
): Promise<{ manifest: TransferManifest; bytes: Uint8Array }> {
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
  const gguf = await openGGUF(path);
  const ranges: { name: string; offset: number; length: number }[] = [
    { name: HEADER_SEGMENT, offset: 0, length: Math.min(gguf.dataOffset, gguf.fileSize) },
  ];
  for (const t of [...gguf.tensors].sort((a, b) => a.offset - b.offset)) {
    if (t.nBytes === undefined) {
      gguf.close();
      throw new ManifestError(
        `${path}: tensor ${t.name} has a type without known size; it cannot be transferred`,
      );
    }
    ranges.push({ name: t.name, offset: gguf.dataOffset + t.offset, length: t.nBytes });
  }
  const fileSize = gguf.fileSize;
  const fingerprint = await modelFingerprint(gguf).finally(() => gguf.close());
  const file = await Deno.open(path, { read: true });
  const whole = createHash("sha256");
  let pos = 0;
  const buf = new Uint8Array(chunkSize);
  const readExactly = async (n: number): Promise<Uint8Array> => {
    const out = n <= buf.length ? buf.subarray(0, n) : new Uint8Array(n);
    let done = 0;
    while (done < n) {
      const r = await file.read(out.subarray(done));
      if (r === null) throw new ManifestError(`${path} ended at ${pos + done}; did it change?`);
      done += r;
    }
    pos += n;
    whole.update(out);
    return out;
  };
  const skipTo = async (offset: number) => {
    while (pos < offset) await readExactly(Math.min(chunkSize, offset - pos));
  };
  const segments = [];
  try {
    for (const r of ranges) {
      await skipTo(r.offset);
      const seg = createHash("sha256");
      const chunks: Uint8Array[] = [];
      for (let at = 0; at < r.length || (r.length === 0 && at === 0); at += chunkSize) {
        const piece = await readExactly(Math.min(chunkSize, r.length - at));
        seg.update(piece);
        chunks.push(sha256(piece));
        if (r.length === 0) break;
      }
      segments.push(create(TransferSegmentSchema, {
        name: r.name,
        offset: BigInt(r.offset),
        length: BigInt(r.length),
        sha256: new Uint8Array(seg.digest()),
        chunkSha256: chunks,
      }));
    }
    await skipTo(fileSize);
  } finally {
    file.close();
  }
  const manifest = create(TransferManifestSchema, {
    modelId: ModelId.of(path, fileSize, fingerprint).toString(),
    sha256: whole.digest("hex"),
    fileSize: BigInt(fileSize),
    dataOffset: BigInt(ranges[0].length),
    chunkSize,
    segments,
    sourceNodeId: opts.nodeId,
  });
  return { manifest, bytes: toBinary(TransferManifestSchema, manifest) };
}

/** A TLS identity to sign manifests with (PEM strings). */
export interface SigningIdentity {
  cert: string;
  key: string;
}

/** Package a manifest for the wire: signed with `identity` when given, else "unsigned". */
export function signedManifest(
  bytes: Uint8Array,
  identity: SigningIdentity | undefined,
  availableSegments: number[],
): GetManifestResponse {
  if (!identity) {
    return create(GetManifestResponseSchema, {
      manifest: bytes,
      signatureScheme: UNSIGNED,
      availableSegments,
    });
  }
  const key = identity.key;
  const type = createPublicKey(key).asymmetricKeyType ?? "key";
  const algorithm = type === "ed25519" || type === "ed448" ? null : "sha256";
  return create(GetManifestResponseSchema, {
    manifest: bytes,
    signatureScheme: `sha256-with-${type}`,
    signature: new Uint8Array(sign(algorithm, bytes, key)),
    signerCertificate: identity.cert,
    availableSegments,
  });
}

/**
 * Decode a manifest answer and check its signature: with `caPem` (TLS on) the manifest must be
 * signed by a certificate the CA issued; without, it must say "unsigned" (or be signed, which
 * cannot be checked and is reported as such). Returns the manifest and a word on its signature.
 */
export function openManifest(
  res: GetManifestResponse,
  caPem: string | undefined,
): { manifest: TransferManifest; signature: string } {
  const manifest = decodeManifest(res.manifest);
  checkShape(manifest);
  if (!caPem) {
    return {
      manifest,
      signature: res.signatureScheme === UNSIGNED
        ? "unsigned (TLS is off)"
        : `${res.signatureScheme} (not checked: TLS is off)`,
    };
  }
  if (res.signatureScheme === UNSIGNED || res.signature.length === 0) {
    throw new ManifestError(
      `the manifest of ${manifest.modelId} from ${manifest.sourceNodeId} is unsigned but TLS is ` +
        `on; is the source agent running without --tls-cert?`,
    );
  }
  let cert: X509Certificate;
  let issued: boolean;
  try {
    cert = pemCertificates(res.signerCertificate)[0];
    // The signer's chain (its intermediates follow it), as an agent checks its own at start.
    issued = chainLeaf(res.signerCertificate, caPem) !== undefined;
  } catch (e) {
    throw new ManifestError(`the manifest's signer certificate is unreadable: ${e}`);
  }
  if (!issued) {
    throw new ManifestError(
      `the manifest of ${manifest.modelId} is signed by "${cert.subject}", which the cluster CA ` +
        `did not issue; refusing it`,
    );
  }
  const type = cert.publicKey.asymmetricKeyType;
  const algorithm = type === "ed25519" || type === "ed448" ? null : "sha256";
  if (!verify(algorithm, res.manifest, cert.publicKey, res.signature)) {
    throw new ManifestError(
      `the manifest signature of ${manifest.modelId} does not verify; refusing it`,
    );
  }
  return { manifest, signature: `verified (${res.signatureScheme}, ${cert.subject})` };
}

/** Chunk sizes a manifest may use: each chunk is one message (at most 64 MiB) and a hash. */
const MIN_CHUNK_SIZE = 1024;
const MAX_CHUNK_SIZE = 64 << 20;
/**
 * The most segments a manifest may have (a GGUF has one per tensor: hundreds, a few thousand
 * for a mixture of experts). Each is at least one stream and a log line when fetched.
 */
export const MAX_SEGMENTS = 1 << 16;
/**
 * The most bytes a serialized manifest may take: 34 per chunk hash, so a 1 TB model in 1 MiB
 * chunks takes ~34 MiB. A bigger one is refused before it is decoded (81 MiB were).
 */
export const MAX_MANIFEST_BYTES = 64 << 20;
/** A GetManifest answer may add a signature and a certificate chain to its manifest. */
const MAX_ANSWER_BYTES = MAX_MANIFEST_BYTES + (1 << 20);
/** Chunk hashes a manifest within MAX_MANIFEST_BYTES can hold (each: 32 bytes, tag, length). */
const MAX_CHUNK_HASHES = Math.floor(MAX_MANIFEST_BYTES / 34);

/**
 * Decode a serialized manifest, refusing before anything is allocated for them one over
 * MAX_MANIFEST_BYTES, over MAX_SEGMENTS segments or with more chunk hashes than it could hold:
 * decoding allocates an object per segment and per hash (a 4 MB manifest of 50 000 empty
 * segments froze the event loop for seconds, and 1e6 of them were decoded).
 */
function decodeManifest(bytes: Uint8Array): TransferManifest {
  if (bytes.length > MAX_MANIFEST_BYTES) {
    throw new ManifestError(
      `the manifest is ${bytes.length} bytes, over the limit of ${MAX_MANIFEST_BYTES} (64 MiB)`,
    );
  }
  let segments = 0;
  let hashes = 0;
  try {
    // Only tags and lengths are read here: no field is decoded.
    const r = new BinaryReader(bytes);
    while (r.pos < r.len && segments <= MAX_SEGMENTS && hashes <= MAX_CHUNK_HASHES) {
      const [field, type] = r.tag();
      if (field !== 6 || type !== WireType.LengthDelimited) {
        r.skip(type, field);
        continue;
      }
      segments++;
      const s = new BinaryReader(r.bytes());
      while (s.pos < s.len && hashes <= MAX_CHUNK_HASHES) {
        const [f, t] = s.tag();
        if (f === 5) hashes++;
        s.skip(t, f);
      }
    }
  } catch { /* not a valid encoding: fromBinary below says why */ }
  if (segments > MAX_SEGMENTS) {
    throw new ManifestError(`the manifest is malformed: it has over ${MAX_SEGMENTS} segments`);
  }
  if (hashes > MAX_CHUNK_HASHES) {
    throw new ManifestError(
      `the manifest is malformed: it has over ${MAX_CHUNK_HASHES} chunk hashes`,
    );
  }
  try {
    return fromBinary(TransferManifestSchema, bytes);
  } catch (e) {
    throw new ManifestError(`the manifest does not decode: ${(e as Error).message}`);
  }
}

/**
 * Read a GetManifest answer stored as `path` (a cache's manifest.bin), refusing a file too
 * large to be one before reading it.
 */
export async function readManifestAnswer(path: string): Promise<GetManifestResponse> {
  const { size } = await Deno.stat(path);
  if (size > MAX_ANSWER_BYTES) {
    throw new ManifestError(`${path} is ${size} bytes, over the limit of ${MAX_ANSWER_BYTES}`);
  }
  try {
    return fromBinary(GetManifestResponseSchema, await Deno.readFile(path));
  } catch (e) {
    throw new ManifestError(`${path} does not decode: ${(e as Error).message}`);
  }
}

/**
 * Refuse a manifest whose numbers would make this agent loop or allocate without bound (a
 * chunk size of 1 over a terabyte "file", segments past the file's end, a hash list that does
 * not match the chunk count): without TLS anyone who reaches the RPC port can send one.
 */
function checkShape(m: TransferManifest): void {
  const bad = (what: string): never => {
    throw new ManifestError(`the manifest of ${m.modelId || "?"} is malformed: ${what}`);
  };
  if (!/^[0-9a-f]{64}$/.test(m.sha256)) bad("sha256 is not 64 hex digits");
  if (m.chunkSize < MIN_CHUNK_SIZE || m.chunkSize > MAX_CHUNK_SIZE) {
    bad(`chunk size ${m.chunkSize} is outside ${MIN_CHUNK_SIZE}..${MAX_CHUNK_SIZE}`);
  }
  if (m.fileSize > BigInt(Number.MAX_SAFE_INTEGER)) bad(`file size ${m.fileSize} is too large`);
  if (m.segments.length === 0) bad("it has no segments");
  if (m.segments.length > MAX_SEGMENTS) {
    bad(`${m.segments.length} segments, over the limit of ${MAX_SEGMENTS}`);
  }
  const header = m.segments[0];
  if (header.name !== HEADER_SEGMENT || header.offset !== 0n || header.length !== m.dataOffset) {
    bad(`segment 0 is not the header [0, ${m.dataOffset})`);
  }
  // Segments in file order, none overlapping (N empty segments at one offset, each with a hash,
  // passed): with each hash list as long as its segment, the chunks then number at most
  // ceil(fileSize / chunkSize) + segments, so the work a manifest asks for is its file's size.
  let end = 0n;
  for (const [i, seg] of m.segments.entries()) {
    if (i > 0 && (seg.offset < end || seg.offset <= m.segments[i - 1].offset)) {
      bad(`segment ${i} (${seg.name}) at ${seg.offset} is not after the one before it`);
    }
    end = seg.offset + seg.length;
    if (end > m.fileSize) {
      bad(`segment ${i} (${seg.name}) ends past the file's ${m.fileSize} bytes`);
    }
    const chunks = chunkCount(Number(seg.length), m.chunkSize);
    if (seg.chunkSha256.length !== chunks) {
      bad(
        `segment ${i} (${seg.name}) lists ${seg.chunkSha256.length} chunk hashes for ${chunks} chunks`,
      );
    }
    if (seg.sha256.length !== 32 || seg.chunkSha256.some((h) => h.length !== 32)) {
      bad(`segment ${i} (${seg.name}) has a hash that is not 32 bytes`);
    }
  }
}

/** Segment indices a stage of layers [from, to) reads (always the header). */
export function segmentsFor(
  manifest: TransferManifest,
  file: GGUFFile,
  range: { from: number; to: number },
): number[] {
  const nLayers = Math.max(
    0,
    ...file.tensors.map((t) => Number(/^blk\.(\d+)\./.exec(t.name)?.[1] ?? -1) + 1),
  );
  const hasOutput = file.tensor("output.weight") !== undefined;
  const isTail = range.to >= nLayers;
  const want = (name: string) => {
    const m = /^blk\.(\d+)\./.exec(name);
    if (m) return Number(m[1]) >= range.from && Number(m[1]) < range.to;
    if (name === "token_embd.weight") return range.from === 0 || (isTail && !hasOutput);
    if (name === "output_norm.weight" || name === "output.weight") return isTail;
    // Every stage rotates with the model's RoPE frequency factors (Llama 3.1+; LongRoPE's two
    // sets, of which each session picks one).
    return name === "rope_freqs.weight" || name === "rope_factors_long.weight" ||
      name === "rope_factors_short.weight";
  };
  const out = [0];
  manifest.segments.forEach((s, i) => {
    if (i > 0 && s.name !== HEADER_SEGMENT && want(s.name)) out.push(i);
  });
  return out;
}
