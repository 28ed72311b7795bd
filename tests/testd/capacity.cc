// Capacity mode of bulwark-testd (see capacity.h): C workers, a service time, a FIFO queue.
#include "capacity.h"

#include <cstdlib>
#include <deque>

namespace testd {

struct CapacityJob {
  uv_timer_t timer;
  std::uint64_t extra_ms = 0;
  void (*done)(void*) = nullptr;
  void* arg = nullptr;
  bool cancelled = false;
  bool in_service = false;
};

namespace {

uv_loop_t* g_loop = nullptr;
std::uint64_t g_capacity = 0, g_service_ms = 0;
std::uint64_t g_busy = 0;          // jobs holding a worker (cancelled ones too, until served)
std::uint64_t g_queued = 0;        // live jobs in g_queue
std::deque<CapacityJob*> g_queue;  // may also hold cancelled jobs, dropped when they reach the head

void admit();

void on_served(uv_timer_t* t) {
  auto* job = static_cast<CapacityJob*>(t->data);
  --g_busy;
  if (!job->cancelled) job->done(job->arg);
  uv_close(reinterpret_cast<uv_handle_t*>(&job->timer),
           [](uv_handle_t* h) { delete static_cast<CapacityJob*>(h->data); });
  admit();
}

void start(CapacityJob* job) {
  ++g_busy;
  job->in_service = true;
  uv_timer_init(g_loop, &job->timer);
  job->timer.data = job;
  uv_timer_start(&job->timer, on_served, g_service_ms + job->extra_ms, 0);
}

// Moves queued jobs into service while workers are free (all of them when the mode is off).
void admit() {
  while (!g_queue.empty() && (g_capacity == 0 || g_busy < g_capacity)) {
    CapacityJob* job = g_queue.front();
    g_queue.pop_front();
    if (job->cancelled) {
      delete job;
      continue;
    }
    --g_queued;
    start(job);
  }
}

bool parse_count(const std::string& s, std::uint64_t& out) {
  if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos)
    return false;
  out = std::strtoull(s.c_str(), nullptr, 10);
  return true;
}

}  // namespace

void capacity_init(uv_loop_t* loop, std::uint64_t capacity, std::uint64_t service_ms) {
  g_loop = loop;
  g_capacity = capacity;
  g_service_ms = service_ms;
}

bool capacity_on() { return g_capacity > 0; }

CapacityJob* capacity_submit(std::uint64_t extra_ms, void (*done)(void*), void* arg) {
  auto* job = new CapacityJob;
  job->extra_ms = extra_ms;
  job->done = done;
  job->arg = arg;
  g_queue.push_back(job);
  ++g_queued;
  admit();
  return job;
}

void capacity_cancel(CapacityJob* job) {
  if (job->cancelled) return;
  job->cancelled = true;
  if (!job->in_service) --g_queued;
}

std::string capacity_control(const std::string& c, const std::string& service_ms, int& status) {
  std::uint64_t new_c = g_capacity, new_ms = g_service_ms;
  if ((!c.empty() && !parse_count(c, new_c)) ||
      (!service_ms.empty() && !parse_count(service_ms, new_ms))) {
    status = 400;
    return "{\"error\":\"c and service_ms take a non-negative integer\"}";
  }
  g_capacity = new_c;
  g_service_ms = new_ms;
  admit();  // more workers, or the mode turned off: start what now fits
  return "{\"capacity\":" + std::to_string(g_capacity) +
         ",\"service_ms\":" + std::to_string(g_service_ms) + ",\"busy\":" + std::to_string(g_busy) +
         ",\"queued\":" + std::to_string(g_queued) + "}";
}

}  // namespace testd
