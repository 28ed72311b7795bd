// The live status page (proxy/admin/status_page.html, compiled in: no file to ship, nothing
// fetched from elsewhere). It polls /status and /status/history once a second.
#pragma once

#include <string>

namespace bulwark {

const std::string& status_page_html();

}  // namespace bulwark
