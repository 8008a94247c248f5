/**
 * TLS material for RPC listeners and clients: the three files every agent and llmctl take
 * (`--tls-cert`, `--tls-key`, `--tls-ca`), read and sanity-checked with errors that name the
 * flag and the fix.
 *
 * @module
 */
import { createPrivateKey, type KeyObject, X509Certificate } from "node:crypto";
import { children, parse } from "./der.ts";

/** Paths of the PEM files for mutual TLS. */
export interface TlsFiles {
  /** This side's certificate chain (PEM), --tls-cert. */
  cert: string;
  /** This side's private key (PEM), --tls-key. */
  key: string;
  /** The CA that signs every certificate of the cluster (PEM), --tls-ca. */
  ca: string;
}

/** The contents of {@linkcode TlsFiles}, ready for node:tls / node:http2 options. */
export interface TlsMaterial {
  /** Certificate chain, PEM. */
  cert: string;
  /** Private key, PEM. */
  key: string;
  /** CA certificate(s), PEM. */
  ca: string;
}

/** TLS files missing, unreadable or not what their flag says. */
export class TlsConfigError extends Error {
  /** Make the error; `message` says what is wrong and what to do. */
  constructor(message: string) {
    super(message);
    this.name = "TlsConfigError";
  }
}

const HINT = "create a CA and certificates with `llmctl certs init --out DIR --nodes a,b,c`";

async function readPem(path: string, flag: string, marker: RegExp, what: string): Promise<string> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound ? "no such file" : (e as Error).message;
    throw new TlsConfigError(`cannot read ${what} "${path}" (${flag}): ${why}; ${HINT}`);
  }
  if (!marker.test(text)) {
    throw new TlsConfigError(
      `"${path}" (${flag}) is not a PEM ${what} (no "-----BEGIN ...-----" line of that kind); ` +
        `did you swap the certificate and key files?`,
    );
  }
  return text;
}

/**
 * Read and check the three PEM files.
 *
 * @example
 * ```ts
 * const tls = await loadTlsFiles({ cert: "certs/a.crt", key: "certs/a.key", ca: "certs/ca.crt" });
 * ```
 */
export async function loadTlsFiles(files: TlsFiles): Promise<TlsMaterial> {
  const [cert, key, ca] = await Promise.all([
    readPem(files.cert, "--tls-cert", /-----BEGIN CERTIFICATE-----/, "certificate"),
    readPem(files.key, "--tls-key", /-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----/, "private key"),
    readPem(files.ca, "--tls-ca", /-----BEGIN CERTIFICATE-----/, "CA certificate"),
  ]);
  checkAgentCertificate(files, { cert, key, ca });
  return { cert, key, ca };
}

/** The HTTP API's certificate and key, and the names the certificate is valid for. */
export interface ApiTlsMaterial {
  /** Certificate chain, PEM. */
  cert: string;
  /** Private key, PEM. */
  key: string;
  /** Its subject alternative names (DNS names and IP addresses). */
  names: string[];
}

/**
 * Read and check the HTTP API's certificate and key (`--api-tls-cert`, `--api-tls-key`): any
 * server certificate (a public CA's, or one `llmctl certs` made), its key, valid now.
 */
export async function loadApiTls(
  files: { cert: string; key: string },
  now = new Date(),
): Promise<ApiTlsMaterial> {
  const [cert, key] = await Promise.all([
    readPem(files.cert, "--api-tls-cert", /-----BEGIN CERTIFICATE-----/, "certificate"),
    readPem(files.key, "--api-tls-key", /-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----/, "private key"),
  ]);
  let leaf: X509Certificate;
  let matches: boolean;
  try {
    leaf = pemCertificates(cert)[0];
    matches = leaf.checkPrivateKey(createPrivateKey(key));
  } catch (e) {
    throw new TlsConfigError(`cannot read the API's TLS files: ${(e as Error).message}`);
  }
  if (!matches) throw notItsKey(files, "--api-tls");
  checkValidNow(leaf, files.cert, "--api-tls-cert", now);
  return { cert, key, names: subjectNames(leaf) };
}

/** A certificate's DNS names and IP addresses, from its subject alternative names. */
export function subjectNames(cert: X509Certificate): string[] {
  return (cert.subjectAltName ?? "").split(/,\s*/).map((n) => /^(?:DNS|IP Address):(.+)$/.exec(n))
    .filter((m) => m !== null).map((m) => m![1]);
}

/** A key file that is not the certificate file's key (`flag`: "--tls" or "--api-tls"). */
function notItsKey(files: { cert: string; key: string }, flag: string, hint = ""): TlsConfigError {
  return new TlsConfigError(
    `"${files.key}" (${flag}-key) is not the key of "${files.cert}" (${flag}-cert)${hint}`,
  );
}

/** Throw unless `cert` (from `path`, given as `flag`) is valid `now`. */
function checkValidNow(
  cert: X509Certificate,
  path: string,
  flag: string,
  now: Date,
  hint = "",
): void {
  const from = new Date(cert.validFrom);
  const to = new Date(cert.validTo);
  if (now < from || now > to) {
    throw new TlsConfigError(
      `"${path}" (${flag}) is valid from ${from.toISOString()} to ${to.toISOString()}, not now` +
        hint,
    );
  }
}

/** OIDs: the extended key usage extension, and its TLS server purpose. */
const EXT_KEY_USAGE = "2.5.29.37";
const SERVER_AUTH = "1.3.6.1.5.5.7.3.1";

/**
 * Refuse, at start, a certificate that cannot serve mTLS: before, an agent started with another
 * node's key, a certificate another CA signed, an expired one or llmctl's client-only one, and
 * then failed every handshake with "socket disconnected".
 */
export function checkAgentCertificate(files: TlsFiles, m: TlsMaterial, now = new Date()): void {
  let cert: X509Certificate;
  let issued: boolean;
  let key: KeyObject;
  try {
    cert = pemCertificates(m.cert)[0];
    issued = chainLeaf(m.cert, m.ca) !== undefined;
    key = createPrivateKey(m.key);
  } catch (e) {
    throw new TlsConfigError(`cannot read the TLS files: ${(e as Error).message}`);
  }
  if (!cert.checkPrivateKey(key)) {
    throw notItsKey(files, "--tls", "; give the key made with that certificate");
  }
  if (!issued) {
    throw new TlsConfigError(
      `"${files.cert}" (--tls-cert) is not signed by the CA "${files.ca}" (--tls-ca); ${HINT}`,
    );
  }
  checkValidNow(cert, files.cert, "--tls-cert", now, "; make a new one with `llmctl certs add`");
  const purposes = extendedKeyUsage(cert.raw);
  if (purposes && !purposes.includes(SERVER_AUTH)) {
    throw new TlsConfigError(
      `"${files.cert}" (--tls-cert) may not serve TLS (a client certificate, like llmctl's); ` +
        `give the node's own certificate`,
    );
  }
}

/** Every certificate of a PEM text, in order. */
export function pemCertificates(pem: string): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new Error("no certificate in the PEM text");
  return blocks.map((b) => new X509Certificate(b));
}

/**
 * Whether `cert` leads to one of `cas`: issued by one, or by a CA certificate of `chain` (the
 * intermediates after a leaf) that does.
 */
function issuedBy(
  cert: X509Certificate,
  chain: readonly X509Certificate[],
  cas: readonly X509Certificate[],
  depth = 0,
): boolean {
  const by = (issuer: X509Certificate) => cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
  if (cas.some(by)) return true;
  if (depth >= 4) return false;
  return chain.some((i) => i !== cert && i.ca && by(i) && issuedBy(i, chain, cas, depth + 1));
}

/**
 * The leaf of PEM chain `certPem` when it leads to a CA of `caPem` (a CA file may hold several
 * CAs, a rotation's old and new; a certificate file the intermediates after its leaf), else
 * undefined. An agent checks its own files at start and peers' manifest signers with it, so a
 * setup one accepts the other does too.
 */
export function chainLeaf(certPem: string, caPem: string): X509Certificate | undefined {
  const [leaf, ...chain] = pemCertificates(certPem);
  return issuedBy(leaf, chain, pemCertificates(caPem)) ? leaf : undefined;
}

/** The purposes a certificate's extended key usage lists (dotted OIDs); undefined: none set. */
function extendedKeyUsage(raw: Uint8Array): string[] | undefined {
  const [tbs] = children(parse(raw));
  const ext = children(tbs).find((n) => n.tag === 0xa3); // [3] extensions
  if (!ext) return undefined;
  for (const e of children(children(ext)[0])) {
    const [id, ...rest] = children(e);
    if (oidText(id.content) !== EXT_KEY_USAGE) continue;
    const value = rest[rest.length - 1]; // OCTET STRING (after an optional critical flag)
    return children(parse(value.content)).map((o) => oidText(o.content));
  }
  return undefined;
}

/** A DER OID's content as dotted text. */
function oidText(b: Uint8Array): string {
  const out = [Math.floor(b[0] / 40), b[0] % 40];
  let v = 0;
  for (let i = 1; i < b.length; i++) {
    v = v * 128 + (b[i] & 0x7f);
    if (!(b[i] & 0x80)) {
      out.push(v);
      v = 0;
    }
  }
  return out.join(".");
}

/**
 * What a client brings to a TLS connection: the CA to trust and, for mutual TLS, its own
 * certificate and key. Each field is a file path or the PEM text itself.
 */
export interface ClientTls {
  /** CA certificate(s) to trust: path or PEM. */
  ca: string;
  /** Client certificate: path or PEM; omit to connect without one (an agent will refuse). */
  cert?: string;
  /** Client private key: path or PEM; required with cert. */
  key?: string;
  /**
   * Names the server's certificate may carry instead of the address dialled: a peer's node id
   * (`llmctl certs init --nodes` names each node's certificate after it), or llmctl's
   * `--tls-server-name`. The address still passes where the certificate lists it.
   */
  serverName?: string | readonly string[];
}

/** Resolve a {@linkcode ClientTls} to PEM text, reading the fields that are paths. */
export async function loadClientTls(
  tls: ClientTls,
): Promise<{ ca: string; cert?: string; key?: string }> {
  const pem = (v: string, flag: string, marker: RegExp, what: string) =>
    v.includes("-----BEGIN") ? Promise.resolve(v) : readPem(v, flag, marker, what);
  if ((tls.cert === undefined) !== (tls.key === undefined)) {
    throw new TlsConfigError(
      "a client certificate needs its key and a key its certificate; " +
        "pass both --tls-cert and --tls-key",
    );
  }
  const cert = /-----BEGIN CERTIFICATE-----/;
  const out = {
    ca: await pem(tls.ca, "--tls-ca", cert, "CA certificate"),
    cert: tls.cert === undefined
      ? undefined
      : await pem(tls.cert, "--tls-cert", cert, "certificate"),
    key: tls.key === undefined
      ? undefined
      : await pem(tls.key, "--tls-key", /-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----/, "private key"),
  };
  // A key of another certificate failed the handshake as "Internal: unsupported protocol".
  if (out.cert !== undefined && out.key !== undefined) {
    const name = (v: string) => v.includes("-----BEGIN") ? "the PEM given" : `"${v}"`;
    let matches: boolean;
    try {
      matches = pemCertificates(out.cert)[0].checkPrivateKey(createPrivateKey(out.key));
    } catch (e) {
      throw new TlsConfigError(`cannot read the TLS files: ${(e as Error).message}`);
    }
    if (!matches) {
      throw new TlsConfigError(
        `${name(tls.key!)} (--tls-key) is not the key of ${name(tls.cert!)} (--tls-cert); ` +
          `give the key made with that certificate`,
      );
    }
  }
  return out;
}

/**
 * Check that either all three TLS paths are given or none; returns them, or undefined for none.
 * Half a TLS configuration is refused: silently falling back to plaintext would be a trap.
 */
export function tlsFilesFromOptions(
  opts: { tlsCert?: string; tlsKey?: string; tlsCa?: string },
): TlsFiles | undefined {
  const given = [opts.tlsCert, opts.tlsKey, opts.tlsCa].filter((x) => x !== undefined && x !== "");
  if (given.length === 0) return undefined;
  if (given.length !== 3) {
    const missing = [
      ["--tls-cert", opts.tlsCert],
      ["--tls-key", opts.tlsKey],
      ["--tls-ca", opts.tlsCa],
    ].filter(([, v]) => !v).map(([f]) => f);
    throw new TlsConfigError(
      `mutual TLS needs --tls-cert, --tls-key and --tls-ca together; missing ${missing.join(", ")}`,
    );
  }
  return { cert: opts.tlsCert!, key: opts.tlsKey!, ca: opts.tlsCa! };
}
