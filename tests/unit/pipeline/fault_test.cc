// The drill header of fault injection (x-bulwark-fault): what it may ask for, and what is
// ignored as a whole.
#include <doctest/doctest.h>

#include "pipeline/fault_stage.h"

namespace bulwark {

TEST_CASE("fault: x-bulwark-fault asks for an abort, a delay or both") {
  FaultStage::Forced f;
  REQUIRE(FaultStage::parse_header("abort=503", f));
  CHECK(f.abort_status == 503);
  CHECK(f.delay_ms == 0);
  REQUIRE(FaultStage::parse_header("delay=250ms", f));
  CHECK(f.abort_status == 0);
  CHECK(f.delay_ms == 250);
  REQUIRE(FaultStage::parse_header(" delay = 2s ,abort=429 ", f));
  CHECK(f.delay_ms == 2000);
  CHECK(f.abort_status == 429);
  REQUIRE(FaultStage::parse_header("delay=60s", f));  // the longest allowed
  CHECK(f.delay_ms == 60000);
}

TEST_CASE("fault: a header value that is not understood is ignored as a whole") {
  FaultStage::Forced f;
  f.abort_status = 7;  // left alone on failure
  for (const char* bad : {"", ",", "abort", "abort=", "abort=99", "abort=600", "abort=503x",
                          "abort=-503", "delay=forever", "delay=61s", "delay=-1ms",
                          "explode=1", "abort=503, nonsense", "abort=503;delay=1s"}) {
    CAPTURE(bad);
    CHECK_FALSE(FaultStage::parse_header(bad, f));
    CHECK(f.abort_status == 7);
  }
}

}  // namespace bulwark
