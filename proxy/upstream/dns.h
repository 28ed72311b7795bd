// Keeps an upstream's endpoint list in step with DNS: every configured endpoint that is a
// name is resolved (all its addresses: a Kubernetes headless Service is one name with many
// addresses) at start and every dns_refresh. A failed lookup keeps the last good answer.
#pragma once

#include <uv.h>

#include <array>
#include <functional>
#include <string>
#include <vector>

#include "admin/stats.h"
#include "upstream/upstream_state.h"

namespace bulwark {

class Resolver {
 public:
  // ok=false: the lookup failed (the addresses are empty).
  using Callback = std::function<void(bool ok, std::vector<Address> addresses)>;
  virtual ~Resolver() = default;
  virtual void resolve(const std::string& host, int port, Callback callback) = 0;
};

// Resolves with uv_getaddrinfo on `loop` (libuv's thread pool does the blocking call).
class UvResolver : public Resolver {
 public:
  explicit UvResolver(uv_loop_t* loop) : loop_(loop) {}
  void resolve(const std::string& host, int port, Callback callback) override;

 private:
  uv_loop_t* loop_;
};

// Every address of `host` (blocking; used once at start).
std::vector<Address> resolve_now(const std::string& host, int port, std::string& error);

class EndpointResolver {
 public:
  // `lookups` counts refresh lookups by result, [success, failure] (null: counted here only).
  EndpointResolver(UpstreamState& state, Resolver& resolver,
                   std::array<Counter, 2>* lookups = nullptr);
  bool has_names() const;
  // Sets the list from blocking lookups; returns the error of a name that did not resolve.
  void start(std::vector<std::string>& errors);
  // Starts a round of lookups; the list is replaced once all have answered, if it changed.
  void refresh();
  // Called when a round finishes (tests).
  std::function<void()> on_round_done;
  std::uint64_t lookups(bool ok) const { return (*lookups_)[ok ? 0 : 1].get(); }
  // Lookups are out (their callbacks will use this object).
  bool busy() const { return outstanding_ > 0; }

 private:
  void publish();
  UpstreamState& state_;
  Resolver& resolver_;
  std::vector<std::vector<Address>> last_good_;  // per configured endpoint
  int outstanding_ = 0;
  std::array<Counter, 2> own_lookups_;
  std::array<Counter, 2>* lookups_;
};

}  // namespace bulwark
