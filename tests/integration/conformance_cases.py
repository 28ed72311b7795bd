"""HTTP/1.1 request conformance table: raw client bytes and, for each, what Bulwark must do.

Each case is a dict:
  name        unique, short
  send        raw bytes, or a list of pieces sent 20 ms apart (split delivery)
  half_close  True: the client shuts its sending side (SHUT_WR) after sending
  expect      status:  the statuses of the responses, in order ([] when none is owed)
              closed:  True if Bulwark closes the connection after them, False if it stays
                       usable (a probe request on it must be answered)
              backend: exactly the complete requests the backend receives, in order. In
                       them "{id}" stands for a generated X-Request-Id and "{endpoint}" for
                       the backend's ip:port
  item        where the rule comes from: "11.N"/"10.N" (the conformance and defects issues),
              "base" (behaviour that already held, pinned so a parser change cannot loosen it)
  differential  False to leave the case out of scripts/differential.sh (it needs a
              Bulwark-only route)
  note        why, when not obvious

Bulwark's upstream head is: request line, Host, the client's end-to-end fields in order,
X-Forwarded-For, X-Forwarded-Proto, X-Request-Id, framing (Content-Length or
Transfer-Encoding), then Connection/Upgrade for an upgrade. up() builds it.

The conformance test runs Bulwark with CONFIG (below): limits at their defaults, a route
/retry that retries 5xx, and every other path to the recording backend, which answers 200
with the target as body (503 for targets containing "fail=503")."""

CLOSE, KEEP = True, False

CONFIG = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: {log} }}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    routes:
      - name: retry
        match: {{ prefix: /retry }}
        upstream: app
        retry: {{ attempts: 2, on: [5xx], methods: all, backoff: {{ base: 1ms, max: 2ms }} }}
      - name: all
        match: {{ prefix: / }}
        upstream: app
upstreams:
  - name: app
    endpoints: [{upstream}]
"""


def up(target, *headers, method=b"GET", host=b"x", body=None, chunked=None, xff=b"127.0.0.1",
       rid=b"{id}", tail=b""):
    """The request Bulwark sends upstream. `body`: a Content-Length body; `chunked`: the
    re-chunked body bytes; `tail`: lines after the framing (upgrade)."""
    out = method + b" " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\n"
    for h in headers:
        out += h + b"\r\n"
    out += b"X-Forwarded-For: " + xff + b"\r\nX-Forwarded-Proto: http\r\nX-Request-Id: " + rid + b"\r\n"
    if body is not None:
        out += b"Content-Length: %d\r\n" % len(body)
    if chunked is not None:
        out += b"Transfer-Encoding: chunked\r\n"
    return out + tail + b"\r\n" + (body or b"") + (chunked or b"")


def case(name, send, status, closed, backend=(), item="base", half_close=False, note="",
         differential=True):
    return {
        "name": name,
        "send": send,
        "half_close": half_close,
        "expect": {"status": status if isinstance(status, list) else [status], "closed": closed,
                   "backend": list(backend)},
        "item": item,
        "note": note,
        "differential": differential,
    }


def refused(name, send, item="base", status=400, note=""):
    """Refused with `status`, the connection closed, nothing reaching the backend."""
    return case(name, send, status, CLOSE, [], item=item, note=note)


H = b"Host: x\r\n"
POST_CHUNKED = b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
HELLO_CHUNKED = b"5\r\nhello\r\n0\r\n\r\n"
MANY = b"".join(b"X-%d: v\r\n" % i for i in range(99))

REQUEST_CASES = [
    # --- well-formed requests --------------------------------------------------------------
    case("get", b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n", 200, KEEP,
         [up(b"/a?b=1", b"Accept: */*")]),
    case("head", b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n", 200, KEEP, [up(b"/a", method=b"HEAD")]),
    case("post-content-length", b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 200,
         KEEP, [up(b"/p", method=b"POST", body=b"hello")]),
    case("post-chunked", POST_CHUNKED + HELLO_CHUNKED, 200, KEEP,
         [up(b"/c", method=b"POST", chunked=HELLO_CHUNKED)]),
    case("chunked-two-chunks", POST_CHUNKED + b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", 200, KEEP,
         [up(b"/c", method=b"POST", chunked=b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")]),
    case("chunked-size-leading-zeros-upper-hex", POST_CHUNKED + b"00A\r\n0123456789\r\n0\r\n\r\n", 200,
         KEEP, [up(b"/c", method=b"POST", chunked=b"a\r\n0123456789\r\n0\r\n\r\n")]),
    case("te-chunked-mixed-case",
         b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n" + HELLO_CHUNKED, 200, KEEP,
         [up(b"/c", method=b"POST", chunked=HELLO_CHUNKED)]),
    case("get-with-chunked-body", b"GET /g HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
         + HELLO_CHUNKED, 200, KEEP, [up(b"/g", chunked=HELLO_CHUNKED)]),
    case("post-content-length-0", b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 200, KEEP,
         [up(b"/p", method=b"POST", body=b"")], item="11.6",
         note="kept: frameworks answer 411 to a POST without a length (RFC 9110 8.6)"),
    case("put-content-length-0", b"PUT /p HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 200, KEEP,
         [up(b"/p", method=b"PUT", body=b"")], item="11.6"),
    case("http10-no-host", b"GET /a HTTP/1.0\r\n\r\n", 200, CLOSE, [up(b"/a", host=b"{endpoint}")],
         item="11.5", note="forwarded as HTTP/1.1 with the endpoint's address as Host"),
    case("http10-host", b"GET /a HTTP/1.0\r\nHost: x\r\n\r\n", 200, CLOSE, [up(b"/a")]),
    case("http10-keep-alive", b"GET /a HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n", 200, KEEP,
         [up(b"/a")]),
    case("http12-is-http11", b"GET /a HTTP/1.2\r\nHost: x\r\n\r\n", 200, KEEP, [up(b"/a")], item="11.10",
         note="RFC 9110 6.2: a higher minor version of 1.x is served as 1.1"),
    case("method-known-extension", b"PURGE /a HTTP/1.1\r\nHost: x\r\n\r\n", 200, KEEP,
         [up(b"/a", method=b"PURGE")], item="11.12"),
    case("method-webdav", b"PROPFIND /a HTTP/1.1\r\nHost: x\r\nDepth: 1\r\n\r\n", 200, KEEP,
         [up(b"/a", b"Depth: 1", method=b"PROPFIND")], item="11.12"),
    case("value-trailing-whitespace-trimmed", b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: v \t \r\n\r\n", 200,
         KEEP, [up(b"/a", b"X-A: v")], note="OWS around a field value is not part of it (RFC 9110 5.5)"),
    case("head-ends-with-bare-lf", b"GET /a HTTP/1.1\r\nHost: x\r\n\n", 200, KEEP, [up(b"/a")],
         note="a bare LF line end is accepted here (RFC 9112 2.2 MAY)"),

    # --- request line ---------------------------------------------------------------------
    refused("http09-request-line", b"GET /a\r\n", item="11.10",
            note="answered at once, not after the header timeout"),
    refused("http09-request-line-lf", b"GET /a\n", item="11.10"),
    refused("version-0.9-explicit", b"GET /a HTTP/0.9\r\nHost: x\r\n\r\n"),
    refused("version-2.0", b"GET /a HTTP/2.0\r\nHost: x\r\n\r\n"),
    refused("version-garbage", b"GET /a HTTP/1.x\r\nHost: x\r\n\r\n"),
    refused("method-unknown", b"FOO /a HTTP/1.1\r\nHost: x\r\n\r\n", item="11.12", status=501,
            note="llhttp 8.1 parses a fixed list of methods (docs/conformance.md)"),
    refused("method-lowercase", b"get /a HTTP/1.1\r\nHost: x\r\n\r\n", item="11.12", status=501,
            note="methods are case-sensitive: 'get' is an unknown method"),
    refused("method-connect", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
    refused("space-in-target", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"),
    refused("control-char-in-target", b"GET /a\x01 HTTP/1.1\r\nHost: x\r\n\r\n"),
    refused("authority-form-target", b"GET example.com:80 HTTP/1.1\r\nHost: x\r\n\r\n"),
    refused("tls-client-hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"),

    # --- Host and the target ----------------------------------------------------------------
    refused("missing-host-http11", b"GET /a HTTP/1.1\r\n\r\n"),
    refused("two-hosts", b"GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    refused("host-with-space", b"GET /a HTTP/1.1\r\nHost: a b\r\n\r\n", item="11.5",
            note="RFC 9112 3.2: an invalid Host value is 400 (NGINX 400; HAProxy forwards it)"),
    refused("host-with-slash", b"GET /a HTTP/1.1\r\nHost: a/b\r\n\r\n", item="11.5",
            note="a path in Host would reach the URLs an application builds from it"),
    refused("host-port-not-digits", b"GET /a HTTP/1.1\r\nHost: a:8x\r\n\r\n", item="11.5"),
    case("host-ip-literal-port", b"GET /a HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", 200, KEEP,
         [up(b"/a", host=b"[::1]:8080")], item="11.5"),
    case("host-reg-name-sub-delims", b"GET /a HTTP/1.1\r\nHost: a_b-c.~x!$&'()*+,;=%41:80\r\n\r\n",
         200, KEEP, [up(b"/a", host=b"a_b-c.~x!$&'()*+,;=%41:80")], item="11.5",
         note="every reg-name character of RFC 3986 3.2.2 is accepted"),
    case("connection-lists-host", b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: Host\r\n\r\n", 200, KEEP,
         [up(b"/a")], item="11.5", note="Connection never removes Host"),
    case("connection-lists-content-length",
         b"POST /a HTTP/1.1\r\nHost: x\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\nhello",
         200, KEEP, [up(b"/a", method=b"POST", body=b"hello")], item="11.5",
         note="nor the framing Bulwark writes"),
    case("absolute-form-replaces-host", b"GET http://a.example/p?q=1 HTTP/1.1\r\nHost: x\r\n\r\n", 200,
         KEEP, [up(b"/p?q=1", host=b"a.example")], item="11.11",
         note="RFC 9112 3.2.2; the destination is still the configured upstream"),
    case("absolute-form-userinfo-port", b"GET http://u:p@a.example:8080/p HTTP/1.1\r\nHost: x\r\n\r\n",
         200, KEEP, [up(b"/p", host=b"a.example:8080")], item="11.11"),
    case("absolute-form-metadata-address",
         b"GET http://169.254.169.254/latest HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n", 200, KEEP,
         [up(b"/latest", host=b"169.254.169.254")], item="11.11",
         note="reaches the configured backend, never 169.254.169.254"),
    case("fragment-not-forwarded", b"GET /p?q#frag HTTP/1.1\r\nHost: x\r\n\r\n", 200, KEEP,
         [up(b"/p?q")], item="11.11"),
    case("fragment-absolute-form", b"GET http://a.example/p#frag HTTP/1.1\r\nHost: x\r\n\r\n", 200, KEEP,
         [up(b"/p", host=b"a.example")], item="11.11"),
    refused("absolute-form-empty-host", b"GET http:///x HTTP/1.1\r\nHost: x\r\n\r\n", item="11.11",
            note="RFC 9110 4.2.1: an http URI with an empty host must be rejected (NGINX 400); "
                 "forwarding it with the client's Host let Host and target disagree"),
    refused("absolute-form-userinfo-no-host", b"GET http://u:p@/x HTTP/1.1\r\nHost: x\r\n\r\n",
            item="11.11", note="userinfo, then an empty host (NGINX 400)"),
    refused("absolute-form-port-no-host", b"GET http://:8080/x HTTP/1.1\r\nHost: x\r\n\r\n",
            item="11.11", note="a port without a host"),
    refused("absolute-form-port-not-digits", b"GET http://b:8x/x HTTP/1.1\r\nHost: x\r\n\r\n",
            item="11.11", note="the authority becomes Host: it must be a valid one (HAProxy 400)"),

    # --- header field syntax ------------------------------------------------------------------
    refused("name-with-space", b"GET /a HTTP/1.1\r\nHost: x\r\nX A: b\r\n\r\n", item="11.4"),
    refused("name-empty", b"GET /a HTTP/1.1\r\nHost: x\r\n: b\r\n\r\n", item="11.4"),
    refused("transfer-space-encoding-with-cl",
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello",
            item="11.4"),
    refused("content-space-length", b"POST /a HTTP/1.1\r\nHost: x\r\nContent Length: 5\r\n\r\nhello",
            item="11.4", note="else the body would be parsed as the next request"),
    refused("space-before-colon", b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length : 3\r\n\r\nabc"),
    refused("tab-in-name", b"GET /a HTTP/1.1\r\nHost: x\r\nX\tA: b\r\n\r\n", item="11.4"),
    refused("non-token-in-name", b"GET /a HTTP/1.1\r\nHost: x\r\nX(A): b\r\n\r\n", item="11.4"),
    refused("obs-fold", b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n"),
    refused("first-line-starts-with-space", b"GET /a HTTP/1.1\r\n Host: x\r\n\r\n"),
    refused("nul-in-value", b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"),
    refused("ctl-in-value", b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n"),
    refused("del-in-value", b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n"),
    refused("bare-cr-in-value", b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\rX-B: b\r\n\r\n"),
    refused("bare-lf-after-value", b"GET /a HTTP/1.1\r\nHost: x\nX-A: b\n\n",
            note="llhttp refuses a bare LF after a field value (stricter than RFC 9112 2.2's MAY)"),
    refused("head-end-cr-then-other", b"GET /a HTTP/1.1\r\nHost: x\r\n\rGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
            note="llhttp takes any byte after the final CR; Bulwark checks it is LF"),
    case("headers-at-max", b"GET /h HTTP/1.1\r\nHost: x\r\n" + MANY + b"\r\n", 200, KEEP,
         [up(b"/h", *MANY.split(b"\r\n")[:-1])], item="11.11", note="100 fields: limits.max_headers"),
    refused("headers-over-max", b"GET /h HTTP/1.1\r\nHost: x\r\n" + MANY + b"X-Last: v\r\n\r\n",
            item="11.11", status=431),
    refused("headers-5000", b"GET /h HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in
                                                                          range(5000)) + b"\r\n",
            item="11.11", status=431),
    refused("head-over-max-bytes", b"GET /h HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
            status=431),

    # --- Content-Length and Transfer-Encoding -------------------------------------------------
    refused("cl-then-te", b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked"
            b"\r\n\r\n0\r\n\r\n"),
    refused("te-then-cl", b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4"
            b"\r\n\r\n0\r\n\r\n"),
    refused("cl-duplicate-differing", b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
            b"Content-Length: 5\r\n\r\nabcde"),
    refused("cl-duplicate-same", b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5"
            b"\r\n\r\nabcde", note="RFC 9112 6.3 allows merging equal values; refusing is safe"),
    refused("cl-list", b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nabcde"),
    refused("cl-plus-sign", b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nabcde"),
    refused("cl-negative", b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
    refused("cl-hex", b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nabcde"),
    refused("cl-empty", b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n"),
    refused("cl-overflow", b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
    refused("cl-over-max-body", b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 11534336\r\n\r\n",
            status=413),
    refused("te-empty-with-cl", b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\nContent-Length: 5"
            b"\r\n\r\nhello", item="11.2", note="a present Transfer-Encoding of any value counts"),
    refused("cl-with-te-empty", b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: "
            b"\r\n\r\nhello", item="11.2"),
    refused("te-empty-alone", b"GET /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n\r\n", item="11.2"),
    refused("te-gzip-chunked", b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            + HELLO_CHUNKED, item="11.3", status=501),
    refused("te-identity-chunked", b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity, chunked"
            b"\r\n\r\n" + HELLO_CHUNKED, item="11.3", status=501),
    refused("te-two-lines-gzip-chunked", b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + HELLO_CHUNKED, item="11.3", status=501),
    refused("te-gzip-only", b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
            note="chunked is not the final coding: 400 (RFC 9112 6.3)"),
    refused("te-chunked-gzip", b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
            + HELLO_CHUNKED),
    refused("te-chunked-twice", b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"
            + HELLO_CHUNKED),
    refused("te-chunked-two-lines", b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + HELLO_CHUNKED),
    refused("te-xchunked", b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n"
            + HELLO_CHUNKED),
    refused("te-chunked-with-parameter", b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked;q=1"
            b"\r\n\r\n" + HELLO_CHUNKED),
    refused("te-vertical-tab", b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \x0bchunked\r\n\r\n"
            + HELLO_CHUNKED),
    refused("te-leading-empty-element", b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ,chunked"
            b"\r\n\r\n" + HELLO_CHUNKED,
            note="empty list elements in Transfer-Encoding are refused, like a trailing comma"),
    refused("te-empty-element-between", b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip,,"
            b"chunked\r\n\r\n" + HELLO_CHUNKED),
    refused("chunk-size-over-max-body", POST_CHUNKED + b"b00001\r\nhello", status=413,
            note="refused at the size line, before any chunk data is read or forwarded"),
    refused("te-in-http10", b"POST /a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + HELLO_CHUNKED, note="RFC 9112 6.1: framing of an HTTP/1.0 message with it is faulty"),

    # --- chunked framing ------------------------------------------------------------------------
    refused("chunk-data-then-lf-smuggles", b"POST /front HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
            b"\r\n\r\n2\r\nAB\n30\r\n\r\nGET /SMUGGLED HTTP/1.1\r\nHost: x\r\nX: pppppp\r\n\r\n\r\n0\r\n\r\n",
            item="11.1", note="the backend must never see GET /SMUGGLED"),
    refused("chunk-data-then-xx", POST_CHUNKED + b"5\r\nhelloXX0\r\n\r\n", item="11.1"),
    refused("chunk-data-then-bare-lf", POST_CHUNKED + b"5\r\nhello\n0\r\n\r\n", item="11.1"),
    refused("chunk-data-then-bare-cr", POST_CHUNKED + b"5\r\nhello\r0\r\n\r\n", item="11.1"),
    refused("last-chunk-cr-then-other", POST_CHUNKED + b"5\r\nhello\r\n0\r\n\rGGET /t2 HTTP/1.1\r\n"
            b"Host: x\r\n\r\n", item="11.1"),
    refused("last-chunk-bare-lf", POST_CHUNKED + b"5\r\nhello\r\n0\r\n\n", item="11.1"),
    refused("chunk-data-split-then-lf", [b"POST /front HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                                         b"\r\n\r\n2\r\nAB", b"\n30\r\n\r\nGET /SMUGGLED HTTP/1.1\r\n"
                                         b"Host: x\r\nX: pppppp\r\n\r\n\r\n0\r\n\r\n"], item="11.1",
            note="the same bytes, the CRLF position in a second packet"),
    refused("chunk-size-bare-lf", POST_CHUNKED + b"5\nhello\r\n0\r\n\r\n"),
    refused("chunk-size-overflow", POST_CHUNKED + b"fffffffffffffffff0\r\nhello\r\n0\r\n\r\n"),
    refused("chunk-size-negative", POST_CHUNKED + b"-5\r\nhello\r\n0\r\n\r\n"),
    refused("chunk-size-0x", POST_CHUNKED + b"0x5\r\nhello\r\n0\r\n\r\n"),
    refused("chunk-size-empty", POST_CHUNKED + b"\r\nhello\r\n0\r\n\r\n"),
    refused("chunk-size-letters", POST_CHUNKED + b"zz\r\nabc\r\n0\r\n\r\n"),
    refused("chunk-size-trailing-space", POST_CHUNKED + b"5 \r\nhello\r\n0\r\n\r\n",
            note="BWS is only allowed before ';' (RFC 9112 7.1.1)"),
    case("chunk-extensions-two", POST_CHUNKED + b"5;a=b;c=d\r\nhello\r\n0\r\n\r\n", 200, KEEP,
         [up(b"/c", method=b"POST", chunked=HELLO_CHUNKED)], item="11.8"),
    case("chunk-extension-bws", POST_CHUNKED + b"5 ;x\r\nhello\r\n0\r\n\r\n", 200, KEEP,
         [up(b"/c", method=b"POST", chunked=HELLO_CHUNKED)], item="11.8"),
    case("chunk-extension-quoted", POST_CHUNKED + b"5;a=\"b; c\"\r\nhello\r\n0;z\r\n\r\n", 200, KEEP,
         [up(b"/c", method=b"POST", chunked=HELLO_CHUNKED)], item="11.8"),
    refused("chunk-extension-no-name", POST_CHUNKED + b"5;=b\r\nhello\r\n0\r\n\r\n", item="11.8"),
    refused("chunk-extension-bad-char", POST_CHUNKED + b"5;a@b\r\nhello\r\n0\r\n\r\n", item="11.8"),
    case("chunked-split-everywhere", [POST_CHUNKED + b"5\r", b"\nhel", b"lo\r", b"\n0\r\n", b"\r", b"\n"],
         200, KEEP, [up(b"/c", method=b"POST", chunked=HELLO_CHUNKED)]),

    # --- request trailers (10.3) ------------------------------------------------------------------
    case("trailers-forwarded-as-trailers", POST_CHUNKED + b"5\r\nhello\r\n0\r\nX-Sum: 1\r\nX-B:  2 \r\n\r\n",
         200, KEEP, [up(b"/c", method=b"POST", chunked=b"5\r\nhello\r\n0\r\nX-Sum: 1\r\nX-B: 2\r\n\r\n")],
         item="10.3"),
    case("trailers-framing-and-routing-dropped",
         POST_CHUNKED + b"0\r\nContent-Length: 5\r\nHost: evil\r\nX-Request-Id: evil\r\nX-Forwarded-For: 6.6.6.6"
         b"\r\nTransfer-Encoding: chunked\r\nX-Ok: 1\r\n\r\n", 200, KEEP,
         [up(b"/c", method=b"POST", chunked=b"0\r\nX-Ok: 1\r\n\r\n")], item="10.3"),
    case("trailers-do-not-leak-into-next-request",
         POST_CHUNKED + b"0\r\nX-T: 1\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n", [200, 200], KEEP,
         [up(b"/c", method=b"POST", chunked=b"0\r\nX-T: 1\r\n\r\n"), up(b"/next")], item="10.3"),
    case("trailers-kept-apart-on-retry",
         b"POST /retry?fail=503 HTTP/1.1\r\nHost: x\r\nX-Request-Id: retry-1\r\nTransfer-Encoding: chunked"
         b"\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n", 503, KEEP,
         [up(b"/retry?fail=503", method=b"POST", rid=b"retry-1", chunked=b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n")]
         * 2, item="10.3", differential=False,
         note="the retry sends the same head and the trailers as trailers, not as headers"),
    refused("trailer-name-with-space", POST_CHUNKED + b"0\r\nX Y: 1\r\n\r\n", item="10.3"),
    refused("trailer-obs-fold", POST_CHUNKED + b"0\r\nX-A: 1\r\n folded\r\n\r\n", item="10.3"),
    refused("trailer-bare-lf", POST_CHUNKED + b"0\r\nX-A: 1\n\r\n", item="11.1"),
    refused("trailer-section-cr-then-other", POST_CHUNKED + b"0\r\nX-A: 1\r\n\rX", item="11.1"),

    # --- hop-by-hop and forwarding headers -------------------------------------------------------
    case("hop-by-hop-stripped",
         b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: X-Private, Keep-Alive\r\nX-Private: s\r\n"
         b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\n"
         b"Upgrade: h2c\r\nX-End: 1\r\n\r\n", 200, KEEP, [up(b"/a", b"X-End: 1")]),
    case("x-forwarded-for-appended", b"GET /a HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n",
         200, KEEP, [up(b"/a", xff=b"203.0.113.9, 127.0.0.1")]),
    case("x-forwarded-for-lines-combined",
         b"GET /a HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-For: 198.51.100.1, "
         b"192.0.2.7\r\n\r\n", 200, KEEP, [up(b"/a", xff=b"203.0.113.9, 198.51.100.1, 192.0.2.7, 127.0.0.1")],
         item="10.15"),
    case("x-forwarded-proto-replaced", b"GET /a HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\n\r\n",
         200, KEEP, [up(b"/a")]),
    case("request-id-kept", b"GET /a HTTP/1.1\r\nHost: x\r\nX-Request-Id: abc-123\r\n\r\n", 200, KEEP,
         [up(b"/a", rid=b"abc-123")]),
    case("request-id-unprintable-replaced", b"GET /a HTTP/1.1\r\nHost: x\r\nX-Request-Id: a b\r\n\r\n", 200,
         KEEP, [up(b"/a")]),
    case("expect-100-continue", b"POST /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5"
         b"\r\n\r\nhello", 200, KEEP, [up(b"/a", method=b"POST", body=b"hello")],
         note="Bulwark answers the Expect itself and does not forward it"),
    case("expect-unknown", b"GET /a HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n", 417, KEEP, []),
    case("upgrade-request-answered-200", b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
         b"Upgrade: websocket\r\n\r\n", 200, CLOSE,
         [up(b"/ws", tail=b"Connection: upgrade\r\nUpgrade: websocket\r\n")],
         note="the backend declined the upgrade: the connection is not reused"),
    case("upgrade-declined-then-request", b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
         b"Upgrade: websocket\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", 200, CLOSE,
         [up(b"/ws", tail=b"Connection: upgrade\r\nUpgrade: websocket\r\n")], item="15.fuzz",
         note="bytes after an upgrade request wait for the 101: forwarded before it, a backend "
              "that declines would read /smuggled as a request Bulwark never checked"),
    case("upgrade-empty-value-then-request", b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
         b"Upgrade: foo\r\nUpgrade:\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", 200, CLOSE,
         [up(b"/up")], item="15.fuzz",
         note="the last Upgrade value is empty: forwarded as a plain request; llhttp parses "
              "nothing after a request it flagged as an upgrade, so the connection ends"),
    case("connection-close", b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 200, CLOSE,
         [up(b"/a")]),

    # --- pipelining and half-close ------------------------------------------------------------------
    case("pipelined-two", b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n",
         [200, 200], KEEP, [up(b"/1"), up(b"/2")]),
    case("pipelined-chunked-then-get", POST_CHUNKED + HELLO_CHUNKED + b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n",
         [200, 200], KEEP, [up(b"/c", method=b"POST", chunked=HELLO_CHUNKED), up(b"/2")]),
    case("pipelined-two-then-half-close",
         b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n", [200, 200], CLOSE,
         [up(b"/1"), up(b"/2")], item="10.17", half_close=True),
    case("pipelined-three-then-half-close",
         b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
         + POST_CHUNKED + HELLO_CHUNKED, [200, 200, 200], CLOSE,
         [up(b"/1"), up(b"/2", method=b"POST", body=b"abc"), up(b"/c", method=b"POST", chunked=HELLO_CHUNKED)],
         item="10.17", half_close=True),
    case("half-close-after-one", b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n", 200, CLOSE, [up(b"/1")],
         half_close=True),
    case("half-close-mid-head", b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHo", 200, CLOSE,
         [up(b"/1")], item="10.17", half_close=True,
         note="the incomplete second request is never answered"),
    case("pipelined-then-malformed", b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nX A: b\r\n\r\n",
         [200, 400], CLOSE, [up(b"/1")]),
    case("request-in-content-length-body",
         b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
         200, KEEP, [up(b"/a", method=b"POST", body=b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")],
         note="a body is a body"),
    case("head-split-across-packets", [b"GET /a HTTP/1.1\r\nHo", b"st: x\r\nX-A: 1", b"23\r\n\r\n"], 200, KEEP,
         [up(b"/a", b"X-A: 123")]),
    case("leading-empty-line", b"\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n", 200, KEEP, [up(b"/a")],
         note="RFC 9112 2.2: at least one empty line before a request-line SHOULD be ignored"),
]
