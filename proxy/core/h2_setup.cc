#include "core/h2_setup.h"

#include <cstdlib>
#include <cstring>
#include <vector>

namespace bulwark {

namespace {

// Each block starts with a header saying its size class (kLarge: from malloc as it is), so
// that free() and realloc() know where it came from; 16 bytes keep the payload aligned.
constexpr std::size_t kHeader = 16;
constexpr int kClasses = 9;  // 16, 32, ..., 4096 bytes of payload
constexpr int kLarge = kClasses;
// Free blocks kept per class and thread: beyond this they go back to malloc. None under
// AddressSanitizer, which then sees every use after free.
#if defined(__SANITIZE_ADDRESS__)
constexpr std::size_t kMaxFree = 0;
#else
constexpr std::size_t kMaxFree = 4096;
#endif

struct FreeLists {
  std::vector<void*> lists[kClasses];
  ~FreeLists() {
    for (auto& list : lists)
      for (void* p : list) std::free(p);
  }
};
thread_local FreeLists t_free;

int size_class(std::size_t n) {
  std::size_t cap = 16;
  for (int c = 0; c < kClasses; ++c, cap <<= 1)
    if (n <= cap) return c;
  return kLarge;
}

std::size_t class_size(int c) { return std::size_t{16} << c; }

void* allocate(std::size_t size, void*) {
  int c = size_class(size);
  unsigned char* block;
  if (c < kClasses && !t_free.lists[c].empty()) {
    block = static_cast<unsigned char*>(t_free.lists[c].back());
    t_free.lists[c].pop_back();
  } else {
    block = static_cast<unsigned char*>(
        std::malloc(kHeader + (c < kClasses ? class_size(c) : size)));
    if (!block) return nullptr;
  }
  block[0] = static_cast<unsigned char>(c);
  return block + kHeader;
}

void release(void* ptr, void*) {
  if (!ptr) return;
  unsigned char* block = static_cast<unsigned char*>(ptr) - kHeader;
  int c = block[0];
  if (c < kClasses && t_free.lists[c].size() < kMaxFree) {
    t_free.lists[c].push_back(block);
    return;
  }
  std::free(block);
}

void* allocate_zeroed(std::size_t count, std::size_t size, void* user) {
  std::size_t n = count * size;
  if (size != 0 && n / size != count) return nullptr;
  void* p = allocate(n, user);
  if (p) std::memset(p, 0, n);
  return p;
}

void* reallocate(void* ptr, std::size_t size, void* user) {
  if (!ptr) return allocate(size, user);
  unsigned char* block = static_cast<unsigned char*>(ptr) - kHeader;
  int c = block[0];
  if (c < kClasses && size <= class_size(c)) return ptr;
  if (c == kLarge) {
    auto* grown = static_cast<unsigned char*>(std::realloc(block, kHeader + size));
    return grown ? grown + kHeader : nullptr;
  }
  void* p = allocate(size, user);
  if (!p) return nullptr;
  std::memcpy(p, ptr, class_size(c));
  release(ptr, user);
  return p;
}

nghttp2_mem g_mem = {nullptr, allocate, release, allocate_zeroed, reallocate};

}  // namespace

nghttp2_mem* h2_allocator() { return &g_mem; }

bool new_h2_session(nghttp2_session** out, bool server, void* user,
                    const std::function<void(nghttp2_session_callbacks*, nghttp2_option*)>& setup) {
  *out = nullptr;
  nghttp2_session_callbacks* cb = nullptr;
  if (nghttp2_session_callbacks_new(&cb) != 0) return false;
  nghttp2_option* opt = nullptr;
  if (nghttp2_option_new(&opt) != 0) {
    nghttp2_session_callbacks_del(cb);
    return false;
  }
  nghttp2_option_set_no_auto_window_update(opt, 1);
  nghttp2_option_set_max_outbound_ack(opt, 1000);
  nghttp2_option_set_max_settings(opt, 32);
  setup(cb, opt);
  int rc = server ? nghttp2_session_server_new3(out, cb, user, opt, h2_allocator())
                  : nghttp2_session_client_new3(out, cb, user, opt, h2_allocator());
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cb);
  if (rc != 0) *out = nullptr;
  return rc == 0;
}

}  // namespace bulwark
