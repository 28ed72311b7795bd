// The effective configuration (defaults filled in) as JSON, for GET /config; and its blocks
// one by one, which a reload compares to tell what changed.
#pragma once

#include <string>

#include "config/config.h"

namespace bulwark {

std::string config_to_json(const Config& config);
std::string upstream_to_json(const UpstreamConfig& upstream);
std::string route_to_json(const RouteConfig& route);
// The blocks that only a restart can change: admin, workers, access_log, redis.
std::string restart_json(const Config& config);

}  // namespace bulwark
