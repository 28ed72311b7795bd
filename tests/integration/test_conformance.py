"""HTTP/1.1 request conformance: every case of conformance_cases.REQUEST_CASES is sent to
Bulwark in front of a recording backend, and the statuses, the connection's fate and the exact
bytes the backend received must be the ones the table gives. The same table drives
scripts/differential.sh against HAProxy and NGINX (with conformance_responses.RESPONSE_CASES,
the upstream side, which test_conformance_upstream.py checks against Bulwark)."""
import unittest

import conformance_cases
from conformance_runner import RecordingBackend, expected_backend, normalize, run_request_case
from harness import Bulwark


class Conformance(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.backend = RecordingBackend()
        cls.proxy = Bulwark(conformance_cases.CONFIG, upstream=cls.backend.address)

    @classmethod
    def tearDownClass(cls):
        code = cls.proxy.stop()
        cls.backend.stop()
        if code not in (0, None):
            raise AssertionError("bulwark exited with %s:\n%s" % (code, cls.proxy.stderr_text()))

    def test_table_is_well_formed(self):
        names = [c["name"] for c in conformance_cases.REQUEST_CASES]
        self.assertEqual(len(names), len(set(names)), "duplicate case names")
        self.assertGreaterEqual(len(names), 80)

    def test_request_cases(self):
        for case in conformance_cases.REQUEST_CASES:
            with self.subTest(case["name"]):
                expect = case["expect"]
                got = run_request_case(self.proxy.port, self.backend, case, len(expect["status"]))
                self.assertEqual(got["status"], expect["status"], "statuses")
                self.assertEqual(got["closed"], expect["closed"], "closed (True) or kept (False)")
                self.assertEqual([normalize(r) for r in got["backend"]],
                                 expected_backend(case, self.backend.address), "what the backend received")
        self.assertIsNone(self.proxy.proc.poll(), "the proxy died")
        self.assertEqual(self.proxy.metric_eventually(0, "bulwark_downstream_connections", listener="inbound"), 0)


if __name__ == "__main__":
    unittest.main()
