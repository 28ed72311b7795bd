// Memory for nghttp2 sessions: nghttp2 allocates and frees many small blocks per stream and
// per frame (stream state, header name/value copies, HPACK entries, outbound frames). This
// allocator keeps freed blocks of up to 4 KiB in per-thread free lists by size class, so a
// worker's sessions recycle them without going through malloc; larger blocks go to malloc.
// A block is only ever freed on the thread that allocated it (a session lives on one worker).
#pragma once

#include <nghttp2/nghttp2.h>

namespace bulwark {

// The allocator for nghttp2_session_*_new3 (the same object for every session).
nghttp2_mem* h2_allocator();

}  // namespace bulwark
