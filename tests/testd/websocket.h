// WebSocket frames for the test backend's echo: RFC 6455 framing, nothing more.
#pragma once

#include <string>

namespace testd {
// Takes one complete client frame from the front of `buffer` and writes the echo frame
// (same opcode and payload, unmasked) to `reply`. False when no complete frame is buffered.
// `close` is set for a close frame.
bool websocket_echo(std::string& buffer, std::string& reply, bool& close);
}  // namespace testd
