#!/usr/bin/env bash
# Installs the system packages a make target needs, only when missing.
#
#   scripts/deps.sh build   cmake and a C++ compiler (grpcio builds gRPC's C core),
#                           lld (links the binary with identical code folding)
#   scripts/deps.sh test    build + Go, go-plugin 1.0.1 and protoc with its Go
#                           plugins (interop and LOOP drop-in tests) and a
#                           Prometheus server (monitoring tests) and buildah
#                           (the container image test)
#   scripts/deps.sh bench   test + wrk and hyperfine
#   scripts/deps.sh profile build + valgrind and perf (make symbol-order records
#                           under callgrind, then refines with perf's page faults)
#
# Uses apt-get (Debian/Ubuntu) as root; otherwise prints the command to run.
set -euo pipefail

want=()
need() { # need COMMAND-OR-PATH PACKAGE
	if [[ $1 == /* ]]; then [[ -e $1 ]] || want+=("$2"); else command -v "$1" >/dev/null || want+=("$2"); fi
}

case "${1:-build}" in
build) ;;
test | bench | profile) ;;
*) echo "usage: $0 build|test|bench|profile" >&2; exit 2 ;;
esac

need cmake cmake
need g++ g++
need ld.lld lld
need make make
if [[ ${1:-build} == profile ]]; then
	need valgrind valgrind
	need perf linux-perf
	need nm binutils
elif [[ ${1:-build} != build ]]; then
	need go golang-go
	need /usr/share/gocode/src/github.com/hashicorp/go-plugin golang-github-hashicorp-go-plugin-dev
	need /usr/share/gocode/src/google.golang.org/grpc golang-google-grpc-dev
	need /usr/share/gocode/src/google.golang.org/protobuf golang-google-protobuf-dev
	need protoc protobuf-compiler
	need protoc-gen-go protoc-gen-go
	need protoc-gen-go-grpc protoc-gen-go-grpc
	need flock util-linux
	need prometheus prometheus
	# The container image test builds and runs the image (no daemon).
	need buildah buildah
fi
if [[ ${1:-build} == bench ]]; then
	need wrk wrk
	need hyperfine hyperfine
fi

if ! command -v cargo >/dev/null; then
	echo "$0: cargo is missing: install the Rust toolchain (https://rustup.rs), then run make again" >&2
	exit 1
fi

[[ ${#want[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -ne 0 ]]; then
	echo "$0: missing packages: ${want[*]}" >&2
	echo "    install them with: sudo apt-get install -y ${want[*]}" >&2
	exit 1
fi
echo "installing ${want[*]} ..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "${want[@]}" >/dev/null 2>&1 ||
	{ apt-get update -qq && apt-get install -y -qq "${want[@]}"; }
