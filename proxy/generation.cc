#include "generation.h"

#include <map>
#include <tuple>

#include "config/json.h"

namespace bulwark {

void StatsRegistry::assign(Generation& g) {
  const Config& c = *g.config;
  std::map<std::string, std::vector<std::shared_ptr<ListenerStats>>> listeners;
  std::map<std::string, std::vector<std::shared_ptr<RouteStats>>> routes;
  auto w_count = static_cast<std::size_t>(workers_);
  g.workers.assign(w_count, {});
  for (const auto& l : c.listeners) {
    auto& ls = listeners[l.name];
    auto old = listeners_.find(l.name);
    if (old != listeners_.end()) {
      ls = old->second;
    } else {
      for (std::size_t w = 0; w < w_count; ++w) ls.push_back(std::make_shared<ListenerStats>());
    }
    for (std::size_t w = 0; w < w_count; ++w) {
      g.workers[w].listeners.push_back(ls[w]);
      g.workers[w].routes.emplace_back();
    }
    for (const auto& r : l.routes) {
      std::string key = l.name + '\n' + r.name;
      auto& rs = routes[key];
      auto found = routes_.find(key);
      if (found != routes_.end()) {
        rs = found->second;
      } else {
        for (std::size_t w = 0; w < w_count; ++w) rs.push_back(std::make_shared<RouteStats>());
      }
      for (std::size_t w = 0; w < w_count; ++w) g.workers[w].routes.back().push_back(rs[w]);
    }
    for (std::size_t w = 0; w < w_count; ++w)  // shares the ListenerStats' ownership
      g.workers[w].routes.back().push_back(
          std::shared_ptr<RouteStats>(ls[w], &ls[w]->unmatched));
  }
  listeners_ = std::move(listeners);
  routes_ = std::move(routes);
}

std::string ReloadSummary::text() const {
  auto part = [](const char* what, int n) {
    return n ? std::string(", ") + std::to_string(n) + " " + what : std::string();
  };
  std::string s = "listeners: " + std::to_string(listeners_added) + " added, " +
                  std::to_string(listeners_removed) + " removed; upstreams: " +
                  std::to_string(upstreams_kept) + " kept" + part("new or changed", upstreams_new) +
                  part("removed", upstreams_removed) + "; routes: " + std::to_string(routes_kept) +
                  " kept" + part("new or changed", routes_new);
  return s;
}

std::shared_ptr<Generation> build_generation(std::shared_ptr<const Config> config,
                                             const Generation* previous, StatsRegistry& stats,
                                             ReloadSummary* summary) {
  auto g = std::make_shared<Generation>();
  g->config = std::move(config);
  g->number = previous ? previous->number + 1 : 1;
  const Config& c = *g->config;
  ReloadSummary local;
  ReloadSummary& sum = summary ? *summary : local;

  // Upstreams: kept when the block (as GET /config shows it) is the same.
  std::map<std::string, std::pair<std::string, std::shared_ptr<UpstreamState>>> old_upstreams;
  if (previous)
    for (const auto& u : previous->upstreams)
      old_upstreams[u->config().name] = {upstream_to_json(u->config()), u};
  for (const auto& uc : c.upstreams) {
    auto found = old_upstreams.find(uc.name);
    if (found != old_upstreams.end() && found->second.first == upstream_to_json(uc)) {
      g->upstreams.push_back(found->second.second);
      ++sum.upstreams_kept;
    } else {
      g->upstreams.push_back(std::make_shared<UpstreamState>(uc, c.workers));
      ++sum.upstreams_new;
    }
  }
  if (previous)
    sum.upstreams_removed = static_cast<int>(previous->upstreams.size()) -
                            static_cast<int>(g->upstreams.size()) + sum.upstreams_new;
  // Routes: kept when the listener and route names and the route's block are the same (and its
  // upstream is kept: a retry budget counts the requests of one upstream).
  // Key: listener name, the route's block as JSON, and its upstream's state object.
  using RouteKey = std::tuple<std::string, std::string, const UpstreamState*>;
  std::map<RouteKey, std::shared_ptr<RouteState>> old_routes;
  if (previous) {
    const Config& pc = *previous->config;
    for (std::size_t li = 0; li < pc.listeners.size(); ++li)
      for (std::size_t ri = 0; ri < pc.listeners[li].routes.size(); ++ri) {
        const RouteConfig& r = pc.listeners[li].routes[ri];
        const auto& up = previous->upstreams[static_cast<std::size_t>(
            previous->route_upstreams[li][ri])];
        old_routes[RouteKey(pc.listeners[li].name, route_to_json(r), up.get())] =
            previous->routes[li][ri];
      }
  }
  for (const auto& l : c.listeners) {
    g->routes.emplace_back();
    g->route_upstreams.emplace_back();
    for (const auto& r : l.routes) {
      int target = -1;
      for (std::size_t u = 0; u < c.upstreams.size(); ++u)
        if (c.upstreams[u].name == r.upstream) target = static_cast<int>(u);
      g->route_upstreams.back().push_back(target);
      const auto& up = g->upstreams[static_cast<std::size_t>(target)];
      auto found = old_routes.find(RouteKey(l.name, route_to_json(r), up.get()));
      if (found != old_routes.end()) {
        g->routes.back().push_back(found->second);
        ++sum.routes_kept;
      } else {
        g->routes.back().push_back(std::make_shared<RouteState>(r));
        ++sum.routes_new;
      }
    }
  }
  stats.assign(*g);
  return g;
}

}  // namespace bulwark
