/**
 * Requests whose authority (or path) Connect cannot parse: mended, replaced by the listener's own,
 * or answered 400, never thrown at the agent (which ended it with an uncaught TypeError).
 */
import { mendAuthority } from "../../../cluster/rpc/request_authority.ts";
import { assertEquals } from "../../support/assert.ts";

function answer() {
  const got: { status?: number; body?: string } = {};
  return {
    got,
    res: {
      writeHead: (status: number) => (got.status = status),
      end: (body: string) => (got.body = body),
    },
  };
}

Deno.test("mendAuthority: a bare IPv6 authority gets brackets, junk gets the listener's own", () => {
  const cases: [string | undefined, string][] = [
    ["127.0.0.1:7950", "127.0.0.1:7950"],
    ["[::1]:7950", "[::1]:7950"],
    ["::1:7950", "[::1]:7950"], // what Deno's HTTP/2 client sends for [::1]:7950
    ["fe80::1:2:7950", "[fe80::1:2]:7950"],
    ["bad host!", "[::1]:41000"],
    ["a:99999", "[::1]:41000"],
    [undefined, "[::1]:41000"],
  ];
  for (const [given, want] of cases) {
    const h2 = { url: "/svc/Method", headers: {}, authority: given };
    const { got, res } = answer();
    assertEquals(mendAuthority(h2, res, "[::1]:41000"), true, String(given));
    assertEquals(h2.authority, want, `HTTP/2 ${given}`);
    assertEquals(got.status, undefined);
    const h1 = { url: "/svc/Method", headers: given === undefined ? {} : { host: given } };
    assertEquals(mendAuthority(h1, res, "[::1]:41000"), true);
    assertEquals((h1.headers as { host?: string }).host, want, `HTTP/1 ${given}`);
  }
});

Deno.test("mendAuthority: a path that is no URL path is a 400", () => {
  const { got, res } = answer();
  const req = { url: "//a:99999", headers: { host: "127.0.0.1:7950" } };
  assertEquals(mendAuthority(req, res, "127.0.0.1:7950"), false);
  assertEquals(got.status, 400);
});
