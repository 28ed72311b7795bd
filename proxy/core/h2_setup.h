// What Bulwark's nghttp2 sessions (clients' and upstreams') share: how they are made, and
// their memory. nghttp2 allocates and frees many small blocks per stream and
// per frame (stream state, header name/value copies, HPACK entries, outbound frames). This
// allocator keeps freed blocks of up to 4 KiB in per-thread free lists by size class, so a
// worker's sessions recycle them without going through malloc; larger blocks go to malloc.
// A block is only ever freed on the thread that allocated it (a session lives on one worker).
#pragma once

#include <nghttp2/nghttp2.h>

#include <functional>

namespace bulwark {

// The allocator for nghttp2_session_*_new3 (the same object for every session).
nghttp2_mem* h2_allocator();

// Makes a session (`server`: a client connection's; else an upstream's) on h2_allocator()
// with what both kinds set: no automatic WINDOW_UPDATE (each side opens a window once the
// bytes were passed on), at most 1000 SETTINGS and PING acknowledgements waiting to be sent,
// 32 entries in a SETTINGS frame. `setup` adds the kind's own callbacks and options. False
// (and *out null) when it could not be made.
bool new_h2_session(nghttp2_session** out, bool server, void* user,
                    const std::function<void(nghttp2_session_callbacks*, nghttp2_option*)>& setup);

}  // namespace bulwark
