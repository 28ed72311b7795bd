// One resolved address of an upstream, shared by every worker. Counters are kept in one
// slot per worker (each worker writes only its own), so the hot path needs no atomics with
// read-modify-write and no locks; the admin thread sums the slots.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "admin/stats.h"
#include "net/address.h"

namespace bulwark {

struct EndpointState {
  EndpointState(const Address& addr, int workers)
      : address(addr), name(addr.to_string()), per_worker(new EndpointStats[workers]) {}
  const Address address;
  const std::string name;  // "ip:port", the `endpoint` label
  std::unique_ptr<EndpointStats[]> per_worker;
};

using EndpointList = std::vector<std::shared_ptr<EndpointState>>;

// The endpoint list for `addresses`, reusing the states in `previous` for addresses that
// stay (so their counters and, later, breaker and health state carry over).
EndpointList merge_endpoints(const EndpointList& previous, const std::vector<Address>& addresses,
                             int workers);

}  // namespace bulwark
