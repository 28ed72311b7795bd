// Capacity mode of bulwark-testd: a backend with C workers and an unbounded FIFO queue, to
// test adaptive load shedding against a backend past its knee.
// At most C requests are "in service" at once; each stays there service_ms milliseconds (plus
// its own delay=, if any) and is then answered. The others wait in the queue in arrival order,
// so their latency grows with the queue. C = 0 turns the mode off (the default).
// A queued request whose connection is reset (or fails) leaves the queue without taking a
// worker; one in service keeps its worker until its service time is over (the work is not
// abandoned). After a plain FIN the request stays queued and is served: testd answers
// half-closed requests.
// testd.cc submits requests here and answers them from the done callback; it routes
// GET /__capacity[?c=N&service_ms=MS] to capacity_control().
#pragma once

#include <uv.h>

#include <cstdint>
#include <string>

namespace testd {

struct CapacityJob;

void capacity_init(uv_loop_t* loop, std::uint64_t capacity, std::uint64_t service_ms);
bool capacity_on();
// Queues one request that needs extra_ms of work on top of the service time; done(arg) is
// called when it has been served (not if it was cancelled first).
CapacityJob* capacity_submit(std::uint64_t extra_ms, void (*done)(void*), void* arg);
// The request's connection went away: done() will not be called. The job must not be used after.
void capacity_cancel(CapacityJob* job);
// GET /__capacity: applies c= and service_ms= when given (empty = unchanged) and returns the
// JSON state {"capacity":..,"service_ms":..,"busy":..,"queued":..}. Sets status 400 for a bad
// value.
std::string capacity_control(const std::string& c, const std::string& service_ms, int& status);

}  // namespace testd
