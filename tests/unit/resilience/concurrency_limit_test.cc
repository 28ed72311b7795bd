#include "resilience/concurrency_limit.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>

using namespace bulwark;

namespace {

constexpr double kBaseUs = 10000;  // the backend's unloaded RTT: 10 ms

// A backend with `capacity` servers and a FIFO queue in front of them: each request is served
// for `service_us` (+-10 %, so that completions do not come in lockstep) once a server is
// free, so the RTT is the service time up to the capacity and grows with the queue above it.
// A request slower than `timeout_us` (0: none) times out at the client (a dropped sample).
struct Backend {
  int capacity;
  std::uint64_t timeout_us = 0;
  double service_us = kBaseUs;
};

// A closed-loop simulation with real feedback delay, on a simulated clock: the load always
// presses the limit (a new request starts whenever fewer than limit() are in flight), each
// request's RTT comes from the backend's queue as it is when the request gets there, and the
// sample arrives only when the request completes, a round trip after the limit that let it in.
// (Feeding the algorithm the RTT of the current limit at once hides the oscillation that a
// per-sample update causes against a real backend.)
struct Sim {
  explicit Sim(LimitAlgorithm& a) : alg(a) {}
  LimitAlgorithm& alg;
  std::uint64_t now_us = 0;
  // Over the second half of the last run: lowest, highest and mean limit.
  int lo = 0, hi = 0;
  double mean = 0;

  struct Request {
    std::uint64_t start_us;
    int inflight;
  };
  std::deque<Request> queued;                          // at the backend, waiting for a server
  std::multimap<std::uint64_t, Request> serving;       // by completion time
  std::mt19937 rng{7};
  int lowest = 1 << 30;                 // over every run
  std::function<void()> after_sample;  // called after each sample

  int in_flight() const { return static_cast<int>(queued.size() + serving.size()); }
  std::uint64_t service(const Backend& b) {
    return static_cast<std::uint64_t>(b.service_us *
                                      std::uniform_real_distribution<double>(0.9, 1.1)(rng));
  }

  // Runs `samples` completions against `backend`; returns the limit after the last one.
  int run(const Backend& backend, int samples) {
    lo = 1 << 30;
    hi = 0;
    double sum = 0;
    for (int i = 0; i < samples; ++i) {
      while (in_flight() < alg.limit()) {
        Request r{now_us, in_flight() + 1};
        if (static_cast<int>(serving.size()) < backend.capacity)
          serving.emplace(now_us + service(backend), r);
        else
          queued.push_back(r);
      }
      auto next = serving.begin();
      now_us = next->first;
      Request done = next->second;
      serving.erase(next);
      while (!queued.empty() && static_cast<int>(serving.size()) < backend.capacity) {
        serving.emplace(now_us + service(backend), queued.front());
        queued.pop_front();
      }
      std::uint64_t rtt = now_us - done.start_us;
      bool dropped = backend.timeout_us != 0 && rtt > backend.timeout_us;
      alg.on_sample(now_us, dropped ? backend.timeout_us : rtt, done.inflight, dropped);
      lowest = std::min(lowest, alg.limit());
      if (after_sample) after_sample();
      if (i >= samples / 2) {
        lo = std::min(lo, alg.limit());
        hi = std::max(hi, alg.limit());
        sum += alg.limit();
      }
    }
    mean = sum / (samples - samples / 2);
    return alg.limit();
  }
};

std::unique_ptr<LimitAlgorithm> make(const std::string& algorithm, int initial = 20,
                                     int min_limit = 5, int max_limit = 1000) {
  LimitConfig c;
  c.algorithm = algorithm;
  c.initial_limit = initial;
  c.min_limit = min_limit;
  c.max_limit = max_limit;
  auto a = make_limit_algorithm(c);
  REQUIRE(a);
  return a;
}

// The backend each adaptive algorithm is run against. gradient2 and vegas read latency, so
// they get no client timeout: they must find the capacity from the RTT alone (and would run
// to max_limit if they ignored it). aimd reads drops only, so its clients time out at 1.5 x
// the base RTT (the limit where the backend's queue reaches half its capacity).
Backend backend_for(const std::string& algorithm, int capacity) {
  Backend b{capacity};
  if (algorithm == "aimd") b.timeout_us = static_cast<std::uint64_t>(1.5 * kBaseUs);
  return b;
}

const char* const kAdaptive[] = {"gradient2", "aimd", "vegas"};

}  // namespace

TEST_CASE("make_limit_algorithm: names, bounds, a clamped initial limit") {
  for (const char* name : {"gradient2", "aimd", "vegas", "fixed"}) {
    CAPTURE(std::string(name));
    auto a = make(name);
    CHECK(std::string(a->name()) == name);
    CHECK(a->limit() == 20);
    CHECK(make(name, 5000, 5, 1000)->limit() == 1000);
    CHECK(make(name, 1, 5, 1000)->limit() == 5);
  }
  LimitConfig c;
  c.algorithm = "bbr";
  CHECK_FALSE(make_limit_algorithm(c));
  c.algorithm = "aimd";
  c.min_limit = 50;
  c.max_limit = 10;
  CHECK_FALSE(make_limit_algorithm(c));
}

TEST_CASE("fixed: the limit never moves") {
  auto a = make("fixed", 40);
  Sim sim(*a);
  CHECK(sim.run(Backend{10}, 5000) == 40);
  CHECK(sim.run(Backend{1000}, 5000) == 40);
  for (int i = 0; i < 100; ++i) a->on_sample(sim.now_us += 100000, 50000, 40, true);
  CHECK(a->limit() == 40);
}

TEST_CASE("adaptive limits converge toward the backend's capacity") {
  for (const char* name : kAdaptive) {
    for (int initial : {20, 200}) {
      CAPTURE(std::string(name));
      CAPTURE(initial);
      auto a = make(name, initial);
      Sim sim(*a);
      int final_limit = sim.run(backend_for(name, 50), 60000);
      MESSAGE(std::string(name) << " from " << initial << ": final " << final_limit
                                << ", second half " << sim.lo << ".." << sim.hi << " mean "
                                << sim.mean);
      CHECK(sim.lo >= 25);
      CHECK(sim.hi <= 100);
      CHECK(final_limit >= 25);
      CHECK(final_limit <= 100);
    }
  }
}

TEST_CASE("adaptive limits back off x0.9 on a drop, once per round trip") {
  for (const char* name : kAdaptive) {
    CAPTURE(std::string(name));
    auto a = make(name, 100);
    std::uint64_t now = 1'000'000;
    a->on_sample(now, 20000, 100, true);
    CHECK(a->limit() == 90);
    // Started (now - 20 ms) before that back-off: the same overload, no second back-off.
    a->on_sample(now + 1000, 20000, 100, true);
    CHECK(a->limit() == 90);
    // Started after it: a new signal.
    a->on_sample(now + 30000, 20000, 90, true);
    CHECK(a->limit() == 81);
  }
}

TEST_CASE("a flat RTT does not grow the limit when the load does not press it") {
  for (const char* name : kAdaptive) {
    CAPTURE(std::string(name));
    auto a = make(name, 20);
    std::uint64_t now = 0;
    for (int i = 0; i < 50000; ++i) a->on_sample(now += 1000, 10000, 3, false);
    CHECK(a->limit() == 20);
  }
}

TEST_CASE("a flat RTT of client timeouts (passed as drops) shrinks the limit to the floor") {
  for (const char* name : kAdaptive) {
    CAPTURE(std::string(name));
    auto a = make(name, 100, 5);
    // Every request times out at 50 ms: the RTT is flat, but nothing is served.
    std::uint64_t now = 0;
    int highest = 0;
    for (int i = 0; i < 5000; ++i) {
      int inflight = a->limit();
      now += 50000 / static_cast<std::uint64_t>(inflight);
      a->on_sample(now, 50000, inflight, true);
      highest = std::max(highest, a->limit());
    }
    CHECK(highest <= 100);
    CHECK(a->limit() == 5);
  }
}

TEST_CASE("adaptive limits follow the capacity down to C/2 and grow again when it returns") {
  for (const char* name : kAdaptive) {
    CAPTURE(std::string(name));
    auto a = make(name, 20);
    Sim sim(*a);
    sim.run(backend_for(name, 50), 40000);
    double full = sim.mean;
    sim.run(backend_for(name, 25), 40000);
    double half = sim.mean;
    int half_hi = sim.hi;
    sim.run(backend_for(name, 50), 40000);
    double back = sim.mean;
    MESSAGE(std::string(name) << ": mean limit at C=50 " << full << ", at C=25 " << half << " (max "
                              << half_hi << "), at C=50 again " << back);
    CHECK(half <= 0.65 * full);
    CHECK(half >= 12.5);
    CHECK(half_hi <= 50);
    CHECK(back >= 1.5 * half);
    CHECK(back >= 25);
    CHECK(back <= 100);
  }
}

TEST_CASE("adaptive limits stay within min_limit and max_limit") {
  for (const char* name : kAdaptive) {
    CAPTURE(std::string(name));
    {
      // The backend could take 50; the cap is 30, and the limit reaches it.
      auto a = make(name, 20, 5, 30);
      Sim sim(*a);
      sim.run(backend_for(name, 50), 20000);
      CHECK(sim.hi == 30);
      CHECK(sim.lo >= 15);  // only a probe cuts it (gradient2 to 1/2, vegas to 3/4)
    }
    {
      // The backend can take 2; the floor is 10, and the limit rests on it.
      auto a = make(name, 40, 10, 1000);
      Sim sim(*a);
      Backend tiny{2, static_cast<std::uint64_t>(1.5 * kBaseUs)};
      sim.run(tiny, 20000);
      CHECK(sim.lo == 10);
      CHECK(sim.hi <= 12);
    }
  }
}

TEST_CASE("gradient2: the baseline does not drift up under sustained load") {
  auto a = make("gradient2", 20);
  auto& g = dynamic_cast<Gradient2Limit&>(*a);
  Sim sim(*a);
  sim.run(Backend{50}, 200000);
  MESSAGE("gradient2 after 200000 samples at C=50: long RTT " << g.long_rtt_us() << " us, limit "
                                                              << sim.lo << ".." << sim.hi);
  CHECK(g.long_rtt_us() <= 1.1 * kBaseUs);
  CHECK(sim.hi <= 100);
}

TEST_CASE("gradient2: a backend that got slower for good becomes the new baseline") {
  auto a = make("gradient2", 20);
  auto& g = dynamic_cast<Gradient2Limit&>(*a);
  Sim sim(*a);
  sim.run(Backend{50}, 20000);
  // The same capacity, but every request now takes 3x as long (and queues past 50).
  Backend slow{50, 0, 3 * kBaseUs};
  sim.lowest = 1 << 30;
  sim.run(slow, 40000);
  int lowest = sim.lowest;
  MESSAGE("gradient2 after a 3x slowdown: lowest " << lowest << ", final " << a->limit()
                                                   << ", long RTT " << g.long_rtt_us());
  CHECK(lowest < 50);  // it did read the slowdown as queueing at first
  // The lowest RTT of a probe: the service time, less its 10 % jitter.
  CHECK(g.long_rtt_us() == doctest::Approx(3 * kBaseUs).epsilon(0.12));
  CHECK(a->limit() >= 25);
  CHECK(a->limit() <= 100);
}

TEST_CASE("vegas: a periodic probe refreshes a stale base RTT") {
  auto a = make("vegas", 20);
  auto& v = dynamic_cast<VegasLimit&>(*a);
  Sim sim(*a);
  sim.run(Backend{50}, 20000);
  CHECK(v.base_rtt_us() == doctest::Approx(kBaseUs).epsilon(0.12));  // less the jitter
  // Every request now takes 3x as long; the old base would read that as a deep queue.
  Backend slow{50, 0, 3 * kBaseUs};
  bool probed = false;
  sim.after_sample = [&] { probed = probed || v.probing(); };
  sim.run(slow, 40000);
  MESSAGE("vegas after a 3x slowdown: final " << a->limit() << ", base RTT " << v.base_rtt_us());
  CHECK(probed);
  CHECK(v.base_rtt_us() == doctest::Approx(3 * kBaseUs).epsilon(0.12));
  CHECK(a->limit() >= 25);
  CHECK(a->limit() <= 100);
}
