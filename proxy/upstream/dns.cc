#include "upstream/dns.h"

#include <netdb.h>

#include <cstring>

#include "core/log.h"

namespace bulwark {

namespace {

std::vector<Address> addresses_of(const addrinfo* list, int port) {
  std::vector<Address> out;
  for (const addrinfo* ai = list; ai; ai = ai->ai_next) {
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
    Address a;
    std::memcpy(&a.storage, ai->ai_addr, ai->ai_addrlen);
    a.length = ai->ai_addrlen;
    if (ai->ai_family == AF_INET)
      reinterpret_cast<sockaddr_in*>(&a.storage)->sin_port = htons(static_cast<uint16_t>(port));
    else
      reinterpret_cast<sockaddr_in6*>(&a.storage)->sin6_port = htons(static_cast<uint16_t>(port));
    bool dup = false;
    for (const auto& b : out) dup = dup || b.to_string() == a.to_string();
    if (!dup) out.push_back(a);
  }
  return out;
}

addrinfo stream_hints() {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  return hints;
}

struct Lookup {
  uv_getaddrinfo_t req;
  int port;
  Resolver::Callback callback;
};

}  // namespace

void UvResolver::resolve(const std::string& host, int port, Callback callback) {
  auto* lookup = new Lookup{{}, port, std::move(callback)};
  addrinfo hints = stream_hints();
  int rc = uv_getaddrinfo(
      loop_, &lookup->req,
      [](uv_getaddrinfo_t* req, int status, addrinfo* res) {
        auto* l = reinterpret_cast<Lookup*>(req);
        std::vector<Address> found;
        if (status == 0) found = addresses_of(res, l->port);
        uv_freeaddrinfo(res);
        // Decided before the call: the by-value parameter may be move-constructed from
        // `found` before any other argument is evaluated (GCC evaluates right to left), and
        // `!found.empty()` then always saw an empty vector, failing every refresh.
        const bool ok = status == 0 && !found.empty();
        l->callback(ok, std::move(found));
        delete l;
      },
      host.c_str(), nullptr, &hints);
  if (rc != 0) {
    Callback cb = std::move(lookup->callback);
    delete lookup;
    cb(false, {});
  }
}

std::vector<Address> resolve_now(const std::string& host, int port, std::string& error) {
  addrinfo hints = stream_hints();
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0) {
    error = "cannot resolve '" + host + "': " + gai_strerror(rc);
    return {};
  }
  std::vector<Address> out = addresses_of(res, port);
  freeaddrinfo(res);
  return out;
}

EndpointResolver::EndpointResolver(UpstreamState& state, Resolver& resolver,
                                   std::array<Counter, 2>* lookups)
    : state_(state),
      resolver_(resolver),
      last_good_(state.config().endpoints.size()),
      lookups_(lookups ? lookups : &own_lookups_) {
  const auto& eps = state_.config().endpoints;
  for (std::size_t i = 0; i < eps.size(); ++i)
    if (eps[i].is_ip()) last_good_[i] = {eps[i].address};
}

bool EndpointResolver::has_names() const {
  for (const auto& e : state_.config().endpoints)
    if (!e.is_ip()) return true;
  return false;
}

void EndpointResolver::start(std::vector<std::string>& errors) {
  const auto& eps = state_.config().endpoints;
  for (std::size_t i = 0; i < eps.size(); ++i) {
    if (eps[i].is_ip()) continue;
    std::string error;
    last_good_[i] = resolve_now(eps[i].host, eps[i].port, error);
    if (last_good_[i].empty())
      errors.push_back("upstream " + state_.config().name + ": " +
                       (error.empty() ? "no address for '" + eps[i].host + "'" : error));
  }
  publish();
}

void EndpointResolver::refresh() {
  if (outstanding_ > 0) return;  // the previous round is still out
  const auto& eps = state_.config().endpoints;
  for (std::size_t i = 0; i < eps.size(); ++i) {
    if (eps[i].is_ip()) continue;
    ++outstanding_;
    resolver_.resolve(eps[i].host, eps[i].port, [this, i](bool ok, std::vector<Address> found) {
      (*lookups_)[ok ? 0 : 1].add();
      if (ok) {
        last_good_[i] = std::move(found);
      } else {
        log_warn("upstream " + state_.config().name + ": lookup of '" +
                 state_.config().endpoints[i].host + "' failed; keeping the last answer");
      }
      if (--outstanding_ == 0) {
        publish();
        if (on_round_done) on_round_done();
      }
    });
  }
}

void EndpointResolver::publish() {
  std::vector<Address> all;
  std::vector<std::string> hosts;  // the name each address came from (TLS server name)
  for (std::size_t i = 0; i < last_good_.size(); ++i) {
    all.insert(all.end(), last_good_[i].begin(), last_good_[i].end());
    hosts.insert(hosts.end(), last_good_[i].size(), state_.config().endpoints[i].host);
  }
  auto current = state_.endpoints();
  EndpointList next = merge_endpoints(*current, all, state_.config(), state_.workers(), hosts);
  bool same = next.size() == current->size();
  for (std::size_t i = 0; same && i < next.size(); ++i) same = next[i] == (*current)[i];
  if (same) return;
  std::string names;
  for (const auto& e : next) names += (names.empty() ? "" : ", ") + e->name;
  log_info("upstream " + state_.config().name + " endpoints: [" + names + "]");
  state_.set_endpoints(std::move(next));
}

}  // namespace bulwark
