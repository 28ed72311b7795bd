// One configuration in effect: the config and the process-wide state made for it. The main
// thread builds a Generation at start and at every reload, reusing the state of what did not
// change (an upstream whose block is unchanged keeps its UpstreamState: endpoints, breakers,
// health, bulkhead and load-shedding state; a route whose block is unchanged keeps its
// RouteState: rate-limit buckets and retry budget; counters are kept by listener and route
// name), and hands it to every worker. Immutable once handed over; shared by the workers and
// kept alive by them for as long as a request made under it runs.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "admin/stats.h"
#include "config/config.h"
#include "pipeline/route_state.h"
#include "upstream/upstream_state.h"

namespace bulwark {

struct Generation {
  std::uint64_t number = 1;
  std::shared_ptr<const Config> config;
  std::vector<std::shared_ptr<UpstreamState>> upstreams;             // by config index
  std::vector<std::vector<std::shared_ptr<RouteState>>> routes;      // [listener][route]
  std::vector<std::vector<int>> route_upstreams;                     // [listener][route]
  // Each worker's counters (it is their only writer).
  struct WorkerPart {
    std::vector<std::shared_ptr<ListenerStats>> listeners;           // by listener
    // [listener][route], then one more: the listener's requests that matched no route.
    std::vector<std::vector<std::shared_ptr<RouteStats>>> routes;
  };
  std::vector<WorkerPart> workers;
};

// Counters by listener and route name, per worker, so that a reload keeps the counts of what
// it keeps. Used on the main thread only.
class StatsRegistry {
 public:
  explicit StatsRegistry(int workers) : workers_(workers) {}
  // Fills g.workers for g.config: the counters of listeners and routes that existed before
  // (by name), new ones for the rest; forgets those of listeners and routes that are gone.
  void assign(Generation& g);

 private:
  int workers_;
  std::map<std::string, std::vector<std::shared_ptr<ListenerStats>>> listeners_;
  std::map<std::string, std::vector<std::shared_ptr<RouteStats>>> routes_;
};

// What a reload changed, for the log line.
struct ReloadSummary {
  int listeners_added = 0, listeners_removed = 0;
  int upstreams_kept = 0, upstreams_new = 0, upstreams_removed = 0;
  int routes_kept = 0, routes_new = 0;
  std::string text() const;
};

// Builds the generation for `config`: the state of `previous` (may be null) is reused where
// the block is unchanged, and new state made for the rest.
std::shared_ptr<Generation> build_generation(std::shared_ptr<const Config> config,
                                             const Generation* previous, StatsRegistry& stats,
                                             ReloadSummary* summary = nullptr);

}  // namespace bulwark
