"""Odd and invalid upstream responses, and what a client of Bulwark must get for each.

RESPONSE_CASES is a list of dicts. Every case has:
  name            unique, [a-z0-9_]
  response        the exact bytes the backend sends once it has read the request
  expect_status   the final status the client gets (int)
and may have:
  method          request method (default GET)
  client_version  "1.1" (default) or "1.0"
  request_headers extra request header lines, as a list of (name, value)
  request_body    request body bytes (sent with Content-Length)
  close_after     the backend closes the connection after sending `response` (default False)
  split_at        offsets in `response`: the backend pauses ~100 ms before each, so that what
                  comes before has reached the client when the rest arrives
  split_pause     that pause in seconds (default 0.1)
  expect_reason   x-bulwark-reason of a local reply (None: the upstream's response is relayed)
  expect_detail   a piece of the problem+json "detail" of the local reply
  expect_client_body  the body bytes the client receives (after de-chunking)
  expect_interim  the 1xx statuses the client sees before the final response, in order
  expect_interim_headers  headers (lower-case name: value) of the first interim response
  expect_headers  final response headers (lower-case name: value) that must be present
  absent_headers  final response headers (lower-case) that must not be present
  expect_trailers trailer fields (lower-case name: value) of the chunked response, exactly
  expect_truncated  the response head went out, then the client connection is closed before
                  the body is complete (never passed off as complete)
  may_truncate    the error is in the body: if the head had already gone out when Bulwark met
                  the error, a truncated response (expect_truncated) is right too
  expect_closed   the client connection is closed after the response (default False)
  expect_upstream_reused  the upstream connection carries the next request (default False)
  expect_outcome  the outcome counted in bulwark_upstream_requests_total
  note            why, with the RFC section when there is one

The table is run against Bulwark by test_conformance_upstream.py and side by side with
HAProxy and NGINX by scripts/differential.sh; keep the keys name/response/expect_status.
"""
import socket
import time


CL_HELLO = b"Content-Length: 5\r\n\r\nhello"
OK_HELLO = b"HTTP/1.1 200 OK\r\n" + CL_HELLO
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
BIG = b"a" * (70 * 1024)  # above the default max_response_header_bytes (64 KiB)


def replay(conn, case):
    """Sends `case`'s response on `conn` the way a backend would: in pieces at `split_at`
    (`split_pause` s apart), then half-closes when `close_after` is set. Returns True when the
    connection is done (half-closed)."""
    response, start = case["response"], 0
    for cut in case.get("split_at", []):
        conn.sendall(response[start:cut])
        start = cut
        time.sleep(case.get("split_pause", 0.1))
    conn.sendall(response[start:])
    if case.get("close_after"):
        conn.shutdown(socket.SHUT_WR)
        return True
    return False


def protocol_error(name, response, detail=None, note="", **extra):
    """A response Bulwark must refuse: 502 upstream-protocol-error, connection discarded."""
    case = dict(name=name, response=response, expect_status=502,
                expect_reason="upstream-protocol-error", expect_detail=detail,
                expect_outcome="protocol_error", expect_upstream_reused=False, note=note)
    case.update(extra)
    return case


RESPONSE_CASES = [
    # --- well-formed responses, including the odd ones that must keep working -------------
    dict(name="content_length", response=OK_HELLO, expect_status=200,
         expect_client_body=b"hello", expect_upstream_reused=True, expect_outcome="success",
         note="the baseline"),
    dict(name="chunked", response=CHUNKED_HEAD + b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
         expect_status=200, expect_client_body=b"hello world", expect_upstream_reused=True,
         expect_outcome="success", note="RFC 9112 7.1"),
    dict(name="chunked_leading_zeros_uppercase_hex",
         response=CHUNKED_HEAD + b"000A\r\n0123456789\r\n0000\r\n\r\n", expect_status=200,
         expect_client_body=b"0123456789", expect_upstream_reused=True,
         note="chunk-size = 1*HEXDIG: leading zeros and upper case are valid"),
    dict(name="chunk_extension", response=CHUNKED_HEAD + b"5;name=value\r\nhello\r\n0;x\r\n\r\n",
         expect_status=200, expect_client_body=b"hello", expect_upstream_reused=True,
         note="RFC 9112 7.1.1: extensions are ignored (and not forwarded)"),
    dict(name="chunk_extensions_value_then_another",
         response=CHUNKED_HEAD + b"5;a=b;c=d\r\nhello\r\n6 ; q=\"x;y\"\r\n world\r\n0\r\n\r\n",
         expect_status=200, expect_client_body=b"hello world", expect_upstream_reused=True,
         expect_outcome="success",
         note="RFC 9112 7.1.1: an extension with a value may be followed by another, and BWS "
              "and quoted values are allowed (llhttp 8.1 refuses the first form)"),
    dict(name="chunk_extensions_split_across_reads",
         response=CHUNKED_HEAD + b"5;a=b;c=\"d\"\r\nhello\r\n0;e=f;g\r\nX-T: 1\r\n\r\n",
         split_at=[len(CHUNKED_HEAD) + 4, len(CHUNKED_HEAD) + 9, len(CHUNKED_HEAD) + 24],
         expect_status=200, expect_client_body=b"hello", expect_trailers={"x-t": "1"},
         expect_upstream_reused=True, expect_outcome="success",
         note="the chunk lines arrive in pieces: the decoder keeps its place between reads"),
    protocol_error("trailer_obs_fold",
                   CHUNKED_HEAD + b"5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n",
                   "obsolete line folding in the trailer section",
                   "RFC 9112 5.2 lets a proxy answer 502 to obs-fold in a response; trailers "
                   "follow the request side's rules", may_truncate=True),
    protocol_error("chunk_extension_trailing_whitespace",
                   CHUNKED_HEAD + b"5;a=b \r\nhello\r\n0\r\n\r\n", "invalid chunk extension",
                   "RFC 9112 7.1.1: BWS only before ';' or '=', never before the line end",
                   may_truncate=True),
    dict(name="close_delimited", response=b"HTTP/1.1 200 OK\r\n\r\nhello", close_after=True,
         expect_status=200, expect_client_body=b"hello", expect_upstream_reused=False,
         expect_outcome="success",
         note="RFC 9112 6.3 (8): no length, the close ends the body; relayed chunked"),
    dict(name="close_delimited_http10_client", response=b"HTTP/1.1 200 OK\r\n\r\nhello",
         close_after=True, client_version="1.0", expect_status=200, expect_client_body=b"hello",
         expect_closed=True, note="an HTTP/1.0 client gets it close-delimited too"),
    dict(name="http10_response", response=b"HTTP/1.0 200 OK\r\n" + CL_HELLO, expect_status=200,
         expect_client_body=b"hello", expect_upstream_reused=False,
         note="an HTTP/1.0 response without keep-alive: the connection is not reused"),
    dict(name="http10_keep_alive",
         response=b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n" + CL_HELLO,
         expect_status=200, expect_client_body=b"hello", expect_upstream_reused=True,
         note="HTTP/1.0 keep-alive is honoured"),
    dict(name="http10_keep_alive_trailing_tab",
         response=b"HTTP/1.0 200 OK\r\nConnection: keep-alive\t\r\n" + CL_HELLO,
         expect_status=200, expect_client_body=b"hello", expect_upstream_reused=False,
         note="llhttp does not read \"keep-alive<TAB>\" as keep-alive: the connection is not reused"),
    dict(name="http10_close_delimited", response=b"HTTP/1.0 200 OK\r\n\r\nhello", close_after=True,
         expect_status=200, expect_client_body=b"hello", note="RFC 9112 6.3 (8)"),
    dict(name="status_204", response=b"HTTP/1.1 204 No Content\r\n\r\n", expect_status=204,
         expect_client_body=b"", expect_upstream_reused=True, note="RFC 9110 15.3.5: no content"),
    dict(name="status_204_then_junk", response=b"HTTP/1.1 204 No Content\r\n\r\nJUNK",
         expect_status=204, expect_client_body=b"", expect_upstream_reused=False,
         note="bytes after a complete response: the connection is not trusted again"),
    dict(name="status_304_with_length",
         response=b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 100\r\n\r\n",
         expect_status=304, expect_client_body=b"", expect_headers={"etag": "\"v1\""},
         expect_upstream_reused=True,
         note="RFC 9110 15.4.5: a 304 has no content whatever its Content-Length says"),
    dict(name="head_request", method="HEAD",
         response=b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", expect_status=200,
         expect_client_body=b"", expect_headers={"content-length": "100"},
         expect_upstream_reused=True, note="RFC 9110 9.3.2: no content in a HEAD response"),
    dict(name="content_length_short_body", response=b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
         close_after=True, expect_status=200, expect_client_body=b"hello", expect_truncated=True,
         expect_outcome="reset",
         note="RFC 9112 6.3: a close before Content-Length bytes is an incomplete message; "
              "the client sees the close, never a complete shorter body"),
    dict(name="content_length_long_body", response=b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nhelloEXTRA",
         expect_status=200, expect_client_body=b"hel", expect_upstream_reused=False,
         note="bytes beyond Content-Length are dropped with the connection"),
    dict(name="bare_lf_lines", response=b"HTTP/1.1 200 OK\nX-A: 1\nContent-Length: 5\n\nhello",
         expect_status=200, expect_client_body=b"hello", expect_headers={"x-a": "1"},
         expect_upstream_reused=True,
         note="RFC 9112 2.2: a recipient MAY take a lone LF as a line terminator"),
    dict(name="bare_lf_status_line", response=b"HTTP/1.1 200 OK\nContent-Length: 5\r\n\r\nhello",
         expect_status=200, expect_client_body=b"hello", expect_upstream_reused=True,
         note="RFC 9112 2.2"),
    dict(name="obs_fold", response=b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\n" + CL_HELLO,
         expect_status=200, expect_client_body=b"hello", expect_headers={"x-folded": "a b"},
         expect_upstream_reused=True,
         note="RFC 9112 5.2: a proxy replaces obs-fold with SP before forwarding"),
    dict(name="no_reason_phrase", response=b"HTTP/1.1 200\r\n" + CL_HELLO, expect_status=200,
         expect_client_body=b"hello", expect_upstream_reused=True,
         note="RFC 9112 4: the reason phrase may be empty, the SP before it missing"),
    dict(name="upgrade_101", response=b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n"
                                      b"Connection: Upgrade\r\n\r\nTUNNEL", close_after=True,
         request_headers=[("Connection", "Upgrade"), ("Upgrade", "echo")], expect_status=101,
         expect_client_body=b"TUNNEL", expect_headers={"upgrade": "echo"}, expect_closed=True,
         note="after 101 the connection is a byte tunnel (its bytes are the 'body' here)"),

    # --- chunk terminators, upstream side ---------------------------------
    protocol_error("chunk_data_not_followed_by_crlf",
                   CHUNKED_HEAD + b"5\r\nhelloXX0\r\n\r\n", "chunk data is not followed by CRLF",
                   "RFC 9112 7.1: chunk-data CRLF; llhttp 8.1 skips any two bytes",
                   may_truncate=True),
    protocol_error("chunk_data_followed_by_lf", CHUNKED_HEAD + b"5\r\nhello\n0\r\n\r\n",
                   "chunk data is not followed by CRLF", "RFC 9112 7.1", may_truncate=True),
    protocol_error("chunk_terminator_hides_bytes",
                   CHUNKED_HEAD + b"2\r\nAB\n30\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n"
                   b"\r\nSMUGGLED", "chunk data is not followed by CRLF",
                   "the response twin of the request smuggling case: llhttp 8.1 read 'AB' as the "
                   "whole body and ignored the rest", may_truncate=True),
    protocol_error("last_chunk_cr_not_lf", CHUNKED_HEAD + b"5\r\nhello\r\n0\r\n\rX",
                   "the last chunk is not ended by CRLF", "RFC 9112 7.1", may_truncate=True),
    protocol_error("chunk_size_cr_not_lf", CHUNKED_HEAD + b"5\rXhello\r\n0\r\n\r\n",
                   "chunk-size line is not ended by CRLF", "RFC 9112 7.1", may_truncate=True),
    protocol_error("chunk_size_overflow", CHUNKED_HEAD + b"fffffffffffffffff\r\nhello\r\n0\r\n\r\n",
                   "chunk size overflow", "a size that does not fit 64 bits", may_truncate=True),
    protocol_error("chunk_size_not_hex", CHUNKED_HEAD + b"xyz\r\nhello\r\n0\r\n\r\n",
                   "invalid chunk size", "RFC 9112 7.1", may_truncate=True),
    protocol_error("trailer_line_bare_lf", CHUNKED_HEAD + b"5\r\nhello\r\n0\r\nX-T: v\n\r\n",
                   "trailer section", "RFC 9112 7.1.2: trailer lines end with CRLF",
                   may_truncate=True),
    protocol_error("trailer_section_cr_not_lf", CHUNKED_HEAD + b"5\r\nhello\r\n0\r\nX-T: v\r\n\rX",
                   "the last chunk is not ended by CRLF", "RFC 9112 7.1", may_truncate=True),
    dict(name="chunk_error_after_head_went_out",
         response=CHUNKED_HEAD + b"5\r\nhello\r\n5\r\nworldXX0\r\n\r\n",
         split_at=[len(CHUNKED_HEAD) + 10], expect_status=200, expect_client_body=b"hello",
         expect_truncated=True, expect_closed=True, expect_upstream_reused=False,
         expect_outcome="protocol_error",
         note="once the head went out, the client connection is closed without the last chunk"),

    # --- interim responses -----------------------------------------------
    dict(name="early_hints_103",
         response=b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n" + OK_HELLO,
         expect_status=200, expect_client_body=b"hello", expect_interim=[103],
         expect_interim_headers={"link": "</style.css>; rel=preload"},
         expect_upstream_reused=True, note="RFC 9110 15.2: a proxy forwards 1xx responses"),
    dict(name="early_hints_http10_client", client_version="1.0",
         response=b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK_HELLO,
         expect_status=200, expect_client_body=b"hello", expect_interim=[], expect_closed=True,
         expect_upstream_reused=True, note="RFC 9110 15.2: never to an HTTP/1.0 client"),
    dict(name="two_interim_responses",
         response=b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                  + OK_HELLO, expect_status=200, expect_client_body=b"hello",
         expect_interim=[102, 103], expect_upstream_reused=True, note="RFC 9110 15.2"),
    dict(name="interim_with_content_length",
         response=b"HTTP/1.1 103 Early Hints\r\nContent-Length: 5\r\n\r\n" + OK_HELLO,
         expect_status=200, expect_client_body=b"hello", expect_interim=[103],
         expect_upstream_reused=True, note="a 1xx response has no content (RFC 9110 15.2)"),
    dict(name="unsolicited_100_continue", response=b"HTTP/1.1 100 Continue\r\n\r\n" + OK_HELLO,
         expect_status=200, expect_client_body=b"hello", expect_interim=[100],
         expect_upstream_reused=True, note="RFC 9110 15.2: forwarded, Bulwark did not ask for it"),
    dict(name="100_continue_after_bulwarks_own", method="PUT",
         request_headers=[("Expect", "100-continue")], request_body=b"hello",
         response=b"HTTP/1.1 100 Continue\r\n\r\n" + OK_HELLO, expect_status=200,
         expect_client_body=b"hello", expect_interim=[100], expect_upstream_reused=True,
         note="Bulwark answers Expect: 100-continue itself: the upstream's 100 is not sent again"),

    # --- invalid responses are protocol errors, not resets ----------------
    protocol_error("status_line_garbage", b"garbage\r\n\r\n", "HTTP/1.x", "RFC 9112 4"),
    protocol_error("status_line_http2", b"HTTP/2.0 200 OK\r\n" + CL_HELLO, "HTTP/1.x",
                   "only HTTP/1.x responses on an HTTP/1.1 connection"),
    protocol_error("status_code_two_digits", b"HTTP/1.1 20 OK\r\n" + CL_HELLO,
                   "three-digit status code", "RFC 9112 4: status-code = 3DIGIT"),
    protocol_error("status_code_600", b"HTTP/1.1 600 Odd\r\n" + CL_HELLO, "outside 100-599",
                   "RFC 9110 15: status codes are 100-599"),
    protocol_error("status_code_no_space", b"HTTP/1.1 200OK\r\n" + CL_HELLO,
                   "not followed by a space", "RFC 9112 4"),
    protocol_error("status_line_double_space", b"HTTP/1.1  200 OK\r\n" + CL_HELLO,
                   "three-digit status code", "llhttp 8.1 read this as status 0"),
    protocol_error("status_line_cr_not_lf", b"HTTP/1.1 200 OK\rXContent-Length: 5\r\n\r\nhello",
                   "not followed by LF", "RFC 9112 2.2: a bare CR is invalid"),
    protocol_error("head_end_cr_not_lf", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\rXhello",
                   "not followed by LF", "llhttp 8.1 takes any byte after the last CR"),
    protocol_error("reason_phrase_control_char", b"HTTP/1.1 200 O\x01K\r\n" + CL_HELLO,
                   "reason phrase", "RFC 9112 4: reason-phrase has no control characters"),
    protocol_error("content_length_and_chunked",
                   b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5\r\nhello\r\n0\r\n\r\n", "Transfer-Encoding",
                   "RFC 9112 6.3 (3): a likely smuggling attempt; the connection is closed"),
    protocol_error("empty_transfer_encoding_and_length",
                   b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n" + CL_HELLO,
                   "both Content-Length and Transfer-Encoding",
                   "a Transfer-Encoding header of any value counts"),
    protocol_error("duplicate_content_length_differing",
                   b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
                   "Content-Length", "RFC 9112 6.3 (5)"),
    protocol_error("duplicate_content_length_same",
                   b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n" + CL_HELLO, "Content-Length",
                   "RFC 9110 8.6 lets a recipient accept identical repeats; llhttp refuses them"),
    protocol_error("content_length_list", b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
                   "Content-Length", "a list value is refused like a repeat"),
    protocol_error("content_length_not_a_number", b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
                   "Content-Length", "RFC 9110 8.6"),
    protocol_error("transfer_coding_gzip",
                   b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n\x1f\x8b\x08\x00", close_after=True,
                   expect_detail="transfer coding other than chunked",
                   note="Transfer-Encoding is hop-by-hop: relayed without it, the gzip bytes would "
                        "be taken for the content"),
    protocol_error("transfer_coding_gzip_chunked",
                   b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4\r\n\x1f\x8b\x08\x00\r\n"
                   b"0\r\n\r\n", "transfer coding other than chunked", "as above"),
    protocol_error("transfer_coding_chunked_trailing_tab",
                   b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\t\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                   close_after=True, expect_detail="transfer coding other than chunked",
                   note="llhttp does not read \"chunked<TAB>\" as chunked: refused rather than relayed "
                        "with its chunk framing as content"),
    protocol_error("transfer_encoding_in_http10",
                   b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                   "HTTP/1.0", "RFC 9112 6.1: the framing of such a message is faulty"),
    protocol_error("field_name_with_space", b"HTTP/1.1 200 OK\r\nX Bad: v\r\n" + CL_HELLO,
                   "not a token", "RFC 9110 5.1: field names are tokens"),
    protocol_error("field_name_empty", b"HTTP/1.1 200 OK\r\n: v\r\n" + CL_HELLO, "not a token",
                   "RFC 9110 5.1"),
    protocol_error("space_before_colon", b"HTTP/1.1 200 OK\r\nX-Bad : v\r\n" + CL_HELLO,
                   "not a token", "RFC 9112 5.1: a proxy must not forward it"),
    protocol_error("field_value_control_char", b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\n" + CL_HELLO,
                   "header value", "RFC 9110 5.5"),
    protocol_error("unsolicited_101",
                   b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                   "101", "RFC 9110 15.2.2: only in answer to an Upgrade request"),
    protocol_error("trailer_field_name_with_space",
                   CHUNKED_HEAD + b"5\r\nhello\r\n0\r\nX Bad: v\r\n\r\n", "trailer field name",
                   "RFC 9110 5.1", may_truncate=True),
    dict(name="head_cut_by_close", response=b"HTTP/1.1 200 OK\r\nContent-Le", close_after=True,
         expect_status=502, expect_reason="upstream-reset", expect_outcome="reset",
         expect_upstream_reused=False,
         note="a close in the middle of the head is a reset, not an invalid response"),

    # --- bounded response heads --------------------------------------------
    protocol_error("head_over_max_response_header_bytes",
                   b"HTTP/1.1 200 OK\r\nX-Big: " + BIG + b"\r\n" + CL_HELLO,
                   "max_response_header_bytes", "64 KiB by default (upstreams[].max_response_header_bytes)"),
    protocol_error("interim_heads_count_against_the_limit",
                   b"HTTP/1.1 103 Early Hints\r\nLink: " + BIG[:40000] + b"\r\n\r\n"
                   b"HTTP/1.1 200 OK\r\nX-Big: " + BIG[:30000] + b"\r\n" + CL_HELLO,
                   "max_response_header_bytes", "the 1xx heads before a response share its budget",
                   expect_interim=None),
    protocol_error("trailer_section_over_limit",
                   CHUNKED_HEAD + b"5\r\nhello\r\n0\r\nX-Big: " + BIG + b"\r\n\r\n",
                   "max_response_header_bytes", "trailers are bounded like the head",
                   split_at=[len(CHUNKED_HEAD) + 10], expect_status=200, expect_reason=None,
                   expect_client_body=b"hello", expect_truncated=True, expect_closed=True),

    # --- response trailers -------------------------------------------------
    dict(name="trailers_forwarded",
         response=CHUNKED_HEAD + b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Count: 1\r\n\r\n",
         expect_status=200, expect_client_body=b"hello",
         expect_trailers={"x-checksum": "abc", "x-count": "1"}, expect_upstream_reused=True,
         expect_outcome="success", note="forwarded as trailers of the chunked response"),
    dict(name="trailers_framing_fields_dropped",
         response=CHUNKED_HEAD + b"5\r\nhello\r\n0\r\nContent-Length: 99\r\nTransfer-Encoding: x\r\n"
                  b"X-Keep: 1\r\n\r\n", expect_status=200, expect_client_body=b"hello",
         expect_trailers={"x-keep": "1"}, expect_upstream_reused=True,
         note="hop-by-hop and framing fields never cross the proxy, trailers included; they "
              "do not change how the connection's next response is framed, so it is reused"),
    dict(name="trailers_http10_client", client_version="1.0",
         response=CHUNKED_HEAD + b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n", expect_status=200,
         expect_client_body=b"hello", expect_closed=True, expect_upstream_reused=True,
         note="an HTTP/1.0 client's response is not chunked: trailers have nowhere to go"),
]
