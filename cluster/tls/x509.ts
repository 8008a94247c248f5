/**
 * A small X.509 v3 certificate builder over node:crypto: ECDSA P-256 keys, SHA-256 signatures,
 * and the extensions mutual TLS needs (basic constraints, key usage, extended key usage,
 * subject alternative names, key identifiers). rustls (behind Deno's node:tls) and OpenSSL
 * (behind Node's grpc-js) both accept what it writes.
 *
 * @module
 */
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  sign,
} from "node:crypto";
import { isIP } from "node:net";
import * as der from "./der.ts";

const OID = {
  commonName: "2.5.4.3",
  organization: "2.5.4.10",
  ecdsaWithSha256: "1.2.840.10045.4.3.2",
  basicConstraints: "2.5.29.19",
  keyUsage: "2.5.29.15",
  extKeyUsage: "2.5.29.37",
  subjectAltName: "2.5.29.17",
  subjectKeyId: "2.5.29.14",
  authorityKeyId: "2.5.29.35",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
};

/** KeyUsage bit numbers (RFC 5280 §4.2.1.3). */
const KU = { digitalSignature: 0, keyCertSign: 5, cRLSign: 6 };

/** Organization written into every subject, so our certificates are easy to recognise. */
export const ORGANIZATION = "distributed-llm";

/** A key pair: private key object and its public key. */
export interface KeyPair {
  /** Private key. */
  privateKey: KeyObject;
  /** Public key. */
  publicKey: KeyObject;
}

/** A fresh ECDSA P-256 key pair (fast to make, small, accepted everywhere TLS 1.3 is). */
export function generateKey(): KeyPair {
  return generateKeyPairSync("ec", { namedCurve: "P-256" });
}

/** What a certificate says about its subject and what it may be used for. */
export interface CertificateSpec {
  /** Subject common name (node name, "llmctl", or the CA's name). */
  commonName: string;
  /** Subject public key. */
  publicKey: KeyObject;
  /** A certificate authority (may sign certificates, nothing else). */
  isCa?: boolean;
  /** Extended key usages for leaf certificates. */
  usages?: ("server" | "client")[];
  /** DNS names and IP addresses for subjectAltName (what a TLS client checks). */
  altNames?: string[];
  /** Validity start; default now minus 5 minutes (tolerates small clock skew between nodes). */
  notBefore?: Date;
  /** Days of validity from notBefore. */
  days: number;
}

/** The signer: the CA's name and key, or nothing for a self-signed certificate. */
export interface Issuer {
  /** DER of the issuer's subject Name, copied verbatim into the issuer field. */
  subjectDer: Uint8Array;
  /** The issuer's public key (for the authority key identifier). */
  publicKey: KeyObject;
  /** The issuer's private key. */
  privateKey: KeyObject;
}

function name(commonName: string): Uint8Array {
  return der.sequence(
    der.set(der.sequence(der.oid(OID.organization), der.utf8String(ORGANIZATION))),
    der.set(der.sequence(der.oid(OID.commonName), der.utf8String(commonName))),
  );
}

/** SHA-1 of the subjectPublicKey bits: the key identifier method 1 of RFC 5280 §4.2.1.2. */
export function keyId(publicKey: KeyObject): Uint8Array {
  const spki = new Uint8Array(publicKey.export({ type: "spki", format: "der" }));
  const [, bits] = der.children(der.parse(spki));
  return new Uint8Array(createHash("sha1").update(bits.content.subarray(1)).digest());
}

function extension(id: string, critical: boolean, value: Uint8Array): Uint8Array {
  return critical
    ? der.sequence(der.oid(id), der.boolean(true), der.octetString(value))
    : der.sequence(der.oid(id), der.octetString(value));
}

function generalName(n: string): Uint8Array {
  const family = isIP(n);
  if (family === 4) return der.implicitPrimitive(7, Uint8Array.from(n.split(".").map(Number)));
  if (family === 6) return der.implicitPrimitive(7, ipv6Bytes(n));
  return der.implicitPrimitive(2, new TextEncoder().encode(n));
}

function ipv6Bytes(ip: string): Uint8Array {
  const [h, t] = ip.includes("::") ? ip.split("::") : [ip, ""];
  const head = h ? h.split(":") : [];
  const tail = t ? t.split(":") : [];
  const groups = [...head, ...Array(8 - head.length - tail.length).fill("0"), ...tail];
  if (groups.some((g) => !/^[0-9a-f]{1,4}$/i.test(g))) {
    throw new Error(`IPv6 address ${ip} is not in plain hex form; write it without embedded IPv4`);
  }
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    const v = parseInt(g, 16);
    out[2 * i] = v >> 8;
    out[2 * i + 1] = v & 0xff;
  });
  return out;
}

/**
 * Build and sign a certificate; returns its DER. Self-signed when `issuer` is omitted
 * (the spec's own key must then be given as `selfKey`).
 */
export function buildCertificate(
  spec: CertificateSpec,
  issuer: Issuer | { selfKey: KeyObject },
): Uint8Array {
  const subject = name(spec.commonName);
  const signer: Issuer = "selfKey" in issuer
    ? { subjectDer: subject, publicKey: spec.publicKey, privateKey: issuer.selfKey }
    : issuer;
  const notBefore = spec.notBefore ?? new Date(Date.now() - 5 * 60_000);
  const notAfter = new Date(notBefore.getTime() + spec.days * 86_400_000);
  const serial = new Uint8Array(randomBytes(16));
  serial[0] &= 0x7f; // positive, and at most 16 bytes as CAs must keep it (RFC 5280 §4.1.2.2)
  const sigAlg = der.sequence(der.oid(OID.ecdsaWithSha256));

  const exts: Uint8Array[] = [];
  if (spec.isCa) {
    exts.push(
      extension(OID.basicConstraints, true, der.sequence(der.boolean(true), der.smallInteger(0))),
    );
    exts.push(extension(OID.keyUsage, true, der.namedBits([KU.keyCertSign, KU.cRLSign])));
  } else {
    exts.push(extension(OID.basicConstraints, true, der.sequence()));
    exts.push(extension(OID.keyUsage, true, der.namedBits([KU.digitalSignature])));
    const eku = (spec.usages ?? ["server", "client"]).map((u) =>
      der.oid(u === "server" ? OID.serverAuth : OID.clientAuth)
    );
    exts.push(extension(OID.extKeyUsage, false, der.sequence(...eku)));
  }
  if (spec.altNames && spec.altNames.length > 0) {
    exts.push(
      extension(OID.subjectAltName, false, der.sequence(...spec.altNames.map(generalName))),
    );
  }
  exts.push(extension(OID.subjectKeyId, false, der.octetString(keyId(spec.publicKey))));
  exts.push(
    extension(
      OID.authorityKeyId,
      false,
      der.sequence(der.implicitPrimitive(0, keyId(signer.publicKey))),
    ),
  );

  const spki = new Uint8Array(spec.publicKey.export({ type: "spki", format: "der" }));
  const tbs = der.sequence(
    der.explicit(0, der.smallInteger(2)), // v3
    der.unsignedInteger(serial),
    sigAlg,
    signer.subjectDer,
    der.sequence(der.time(notBefore), der.time(notAfter)),
    subject,
    spki,
    der.explicit(3, der.sequence(...exts)),
  );
  // node:crypto signs ECDSA in DER (dsaEncoding "der"), the form X.509 wants.
  const signature = new Uint8Array(sign("sha256", tbs, signer.privateKey));
  return der.sequence(tbs, sigAlg, der.bitString(signature));
}

/** PEM armour for DER bytes. */
export function toPem(label: string, bytes: Uint8Array): string {
  let b64 = "";
  const chunk = 0x8000;
  for (let i = 0; i < bytes.length; i += chunk) {
    b64 += String.fromCharCode(...bytes.subarray(i, i + chunk));
  }
  const lines = btoa(b64).match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

/** DER of the first PEM block with `label`; throws when there is none. */
export function fromPem(label: string, pem: string): Uint8Array {
  const m = pem.match(new RegExp(`-----BEGIN ${label}-----([^-]+)-----END ${label}-----`));
  if (!m) throw new Error(`no PEM "${label}" block found`);
  return Uint8Array.from(atob(m[1].replace(/\s+/g, "")), (c) => c.charCodeAt(0));
}

/**
 * Read back what an issuer needs from its certificate and key PEM: the subject Name (copied
 * byte for byte into the certificates it signs, so chains match exactly) and the keys.
 */
export function issuerFromPem(certPem: string, keyPem: string): Issuer {
  const cert = der.parse(fromPem("CERTIFICATE", certPem));
  const tbs = der.children(cert)[0];
  const fields = der.children(tbs);
  // [0] version, serial, signature, issuer, validity, subject, …
  const subjectDer = new Uint8Array(fields[fields[0].tag === 0xa0 ? 5 : 4].raw);
  const privateKey = createPrivateKey(keyPem);
  return { subjectDer, privateKey, publicKey: createPublicKey(privateKey) };
}

/** PKCS#8 PEM of a private key. */
export function privateKeyPem(key: KeyObject): string {
  return key.export({ type: "pkcs8", format: "pem" }) as string;
}
