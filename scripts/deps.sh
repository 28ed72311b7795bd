# Sourced by run.sh, test.sh and bench.sh: installs the Debian 12 packages Bulwark needs,
# only when some are missing.
BULWARK_BUILD_PACKAGES="cmake g++ make pkg-config libuv1-dev node-llhttp libyaml-cpp-dev prometheus-cpp-dev libhiredis-dev libnghttp2-dev libssl-dev ca-certificates"
BULWARK_TEST_PACKAGES="doctest-dev wrk openssl python3 python3-yaml python3-h2 nghttp2-client curl redis-server prometheus clang-16 libfuzzer-16-dev libclang-rt-16-dev python3-grpcio"

install_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  echo "installing: ${missing[*]}" >&2
  local sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
