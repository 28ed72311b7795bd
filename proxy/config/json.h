// The effective configuration (defaults filled in) as JSON, for GET /config.
#pragma once

#include <string>

#include "config/config.h"

namespace bulwark {

std::string config_to_json(const Config& config);

}  // namespace bulwark
