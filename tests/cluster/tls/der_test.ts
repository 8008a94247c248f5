import * as der from "../../../cluster/tls/der.ts";
import { assertEquals } from "../../support/assert.ts";

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(" ");

Deno.test("DER: OIDs, lengths, integers, named bits and times encode as X.690 says", () => {
  assertEquals(hex(der.oid("1.2.840.10045.4.3.2")), "06 08 2a 86 48 ce 3d 04 03 02");
  assertEquals(hex(der.oid("2.5.29.17")), "06 03 55 1d 11");
  // Short and long length forms.
  assertEquals(hex(der.octetString(new Uint8Array(127)).subarray(0, 2)), "04 7f");
  assertEquals(hex(der.octetString(new Uint8Array(200)).subarray(0, 3)), "04 81 c8");
  assertEquals(hex(der.octetString(new Uint8Array(300)).subarray(0, 4)), "04 82 01 2c");
  // Positive integers keep a leading zero only when the top bit is set.
  assertEquals(hex(der.unsignedInteger(Uint8Array.of(0x80, 1))), "02 03 00 80 01");
  assertEquals(hex(der.unsignedInteger(Uint8Array.of(0, 0, 0x7f))), "02 01 7f");
  assertEquals(hex(der.smallInteger(0)), "02 01 00");
  assertEquals(hex(der.smallInteger(2)), "02 01 02");
  // KeyUsage: keyCertSign(5) + cRLSign(6) → one unused bit; digitalSignature(0) → seven.
  assertEquals(hex(der.namedBits([5, 6])), "03 02 01 06");
  assertEquals(hex(der.namedBits([0])), "03 02 07 80");
  // UTCTime before 2050, GeneralizedTime from 2050 (RFC 5280).
  assertEquals(
    new TextDecoder().decode(der.time(new Date(Date.UTC(2049, 11, 31, 23, 59, 58))).subarray(2)),
    "491231235958Z",
  );
  const g = der.time(new Date(Date.UTC(2050, 0, 1)));
  assertEquals(g[0], 0x18);
  assertEquals(new TextDecoder().decode(g.subarray(2)), "20500101000000Z");
});

Deno.test("DER: parse reads back what the encoders wrote", () => {
  const seq = der.sequence(
    der.boolean(true),
    der.utf8String("héllo"),
    der.octetString(new Uint8Array(300)),
  );
  const [b, s, o] = der.children(der.parse(seq));
  assertEquals([b.tag, s.tag, o.tag], [0x01, 0x0c, 0x04]);
  assertEquals(new TextDecoder().decode(s.content), "héllo");
  assertEquals(o.content.length, 300);
});
