// bulwark: flags -> config -> Server -> run the loops.
#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>

#include "config/lint.h"
#include "config/loader.h"
#include "core/log.h"
#include "server.h"

namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "usage: bulwark [-c FILE]            run (default FILE: config/bulwark.yaml)\n"
               "       bulwark --check [-c FILE]    validate the config, warn about risky policies, exit\n"
               "       bulwark --version\n");
}

}  // namespace

int main(int argc, char** argv) {
  // SIGHUP reloads once the server runs; until then it must not end the process (its default).
  std::signal(SIGHUP, SIG_IGN);
  std::string file = "config/bulwark.yaml";
  bool check = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if ((arg == "-c" || arg == "--config") && i + 1 < argc) {
      file = argv[++i];
    } else if (arg == "--check") {
      check = true;
    } else if (arg == "--version") {
      std::printf("bulwark %s\n", BULWARK_VERSION);
      return 0;
    } else if (arg == "-h" || arg == "--help") {
      usage(stdout);
      return 0;
    } else {
      std::fprintf(stderr, "bulwark: unknown argument '%s'\n", arg.c_str());
      usage(stderr);
      return 2;
    }
  }
  std::string text;
  bulwark::LoadResult result = bulwark::load_config_file(file, &text);
  if (!result.config) {
    for (const auto& e : result.errors) std::fprintf(stderr, "%s\n", e.c_str());
    return 1;
  }
  if (check) {
    // Risky but valid policies: warned about on stderr, the file is still ok (exit 0).
    for (const auto& w : bulwark::lint_config(*result.config))
      std::fprintf(stderr, "warning: %s\n", w.c_str());
    std::printf("%s: ok\n", file.c_str());
    return 0;
  }
  // Every connection is a descriptor: take the hard limit, as HAProxy and NGINX can be told to.
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }
  bulwark::Server server(std::move(*result.config), std::move(text));
  return server.run();
}
