"""Requests and responses pass through with bodies intact, hop-by-hop headers removed,
forwarding headers added and bodies re-framed."""
import json
import unittest

from harness import ProxyTest, chunked, connect, crc_hex, pattern, request, Reader


class ProxyBasics(ProxyTest):
    def test_get_post_put_with_both_framings(self):
        for size in (0, 1024):
            body = pattern(size)
            for method in ("GET", "POST", "PUT"):
                for framing in ("length", "chunked"):
                    with self.subTest(method=method, size=size, framing=framing):
                        if framing == "chunked":
                            status, h, _ = request(self.proxy.port, method, "/x",
                                                   headers={"Transfer-Encoding": "chunked"},
                                                   body=chunked(body, 300))
                        else:
                            status, h, _ = request(self.proxy.port, method, "/x",
                                                   headers={"Content-Length": str(size)}, body=body)
                        self.assertEqual(status, 200)
                        self.assertEqual(int(h["x-testd-body-bytes"]), size)
                        self.assertEqual(h["x-testd-body-crc32"], crc_hex(body))

    def test_response_bodies_both_framings(self):
        for size in (0, 1024):
            for chunked_reply in ("0", "1"):
                with self.subTest(size=size, chunked=chunked_reply):
                    status, h, body = self.get("/d?size=%d&chunked=%s" % (size, chunked_reply))
                    self.assertEqual(status, 200)
                    self.assertEqual(len(body), size)
                    self.assertEqual(body, pattern(size))

    def test_close_delimited_upstream_body_is_rechunked(self):
        status, h, body = self.get("/d?size=5000&eof=1")
        self.assertEqual(status, 200)
        self.assertEqual(h.get("transfer-encoding"), "chunked")
        self.assertEqual(body, pattern(5000))

    def test_forwarding_headers(self):
        status, _, body = self.get("/h?headers=1", headers={"X-Forwarded-For": "203.0.113.9",
                                                            "X-Request-Id": "abc-123"})
        self.assertEqual(status, 200)
        seen = {k.lower(): v for k, v in json.loads(body)["headers"]}
        self.assertEqual(seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1")
        self.assertEqual(seen["x-forwarded-proto"], "http")
        self.assertEqual(seen["x-request-id"], "abc-123")

    def test_request_id_generated_when_absent(self):
        _, _, body = self.get("/h?headers=1")
        seen = {k.lower(): v for k, v in json.loads(body)["headers"]}
        self.assertRegex(seen["x-request-id"], r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

    def test_hop_by_hop_request_headers_removed(self):
        _, _, body = self.get("/h?headers=1", headers={
            "Connection": "close, X-Private", "X-Private": "secret", "Keep-Alive": "timeout=5",
            "Proxy-Connection": "keep-alive", "TE": "trailers", "X-End-To-End": "yes"})
        names = [k.lower() for k, _ in json.loads(body)["headers"]]
        for gone in ("x-private", "keep-alive", "proxy-connection", "te", "connection"):
            self.assertNotIn(gone, names)
        self.assertIn("x-end-to-end", names)

    def test_head_request_has_no_body(self):
        s = connect(self.proxy.port)
        s.sendall(b"HEAD /d?size=100 HTTP/1.1\r\nHost: x\r\n\r\nGET /d?size=3 HTTP/1.1\r\nHost: x\r\n\r\n")
        r = Reader(s)
        status, h, body = r.read_response(head_request=True)
        self.assertEqual((status, h["content-length"], body), (200, "100", b""))
        status, _, body = r.read_response()
        self.assertEqual((status, body), (200, pattern(3)))
        s.close()

    def test_status_codes_pass_through(self):
        for code in (201, 204, 404, 500, 503):
            status, h, _ = self.get("/s?status=%d" % code)
            self.assertEqual(status, code)
            self.assertNotIn("x-bulwark-reason", h)

    def test_absolute_form_target_does_not_choose_destination(self):
        status, h, body = self.get("http://169.254.169.254/latest?headers=1")
        self.assertEqual(status, 200)
        self.assertEqual(h["x-testd-name"], "testd")
        self.assertEqual(json.loads(body)["url"], "/latest?headers=1")


if __name__ == "__main__":
    unittest.main()
