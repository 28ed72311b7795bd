// The resilience blocks of the configuration, read by the loader (config/loader.cc). Each
// reader leaves `out` empty when its block is absent (the control is off), and records every
// error in the errors of `parent`.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "config/config.h"
#include "config/yaml_reader.h"

namespace bulwark {

// The largest count a configuration field takes.
constexpr std::uint64_t kMaxCount = 100'000'000;
// The refusal of a block this build validates but does not serve yet.
inline constexpr const char* kNotSupported = "is not supported by this build yet";

// Returns `s` in ASCII lower case.
std::string lower(std::string s);

// Route blocks.
void read_rate_limit(const YamlFields& parent, std::optional<RateLimitConfig>& out);
void read_retry(const YamlFields& parent, std::optional<RetryConfig>& out);
void read_fault(const YamlFields& parent, std::optional<FaultConfig>& out);
// Upstream blocks.
void read_circuit_breaker(const YamlFields& parent, std::optional<CircuitBreakerConfig>& out);
void read_health_check(const YamlFields& parent, std::optional<HealthCheckConfig>& out);
void read_load_shedding(const YamlFields& parent, std::optional<LoadSheddingConfig>& out);
// The top-level redis block: addresses, mode, AUTH (password from a file or the environment).
void read_redis(const YamlFields& root, std::optional<RedisConfig>& out);

}  // namespace bulwark
