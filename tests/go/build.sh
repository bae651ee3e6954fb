#!/usr/bin/env bash
# Build the go-plugin interop programs used by loopp's tests and benchmark.
#
#   tests/go/build.sh OUTDIR   ->  OUTDIR/gohost, OUTDIR/goplugin
#
# Offline, GOPATH mode, against Debian's packaged go-plugin 1.0.1 / grpc-go
# in /usr/share/gocode. Installs those packages with apt-get if missing (root
# only). Idempotent: a binary is rebuilt only if its source or this script is
# newer than it.
set -euo pipefail

if [[ $# -ne 1 ]]; then
	echo "usage: $0 OUTDIR" >&2
	exit 2
fi
mkdir -p "$1"
out=$(cd "$1" && pwd)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
gopath=/usr/share/gocode

# Test processes build concurrently (nextest runs each test in its own
# process): one builds, the others wait for it.
exec 9>"$out/.lock"
flock 9

if ! command -v go >/dev/null || [[ ! -d $gopath/src/github.com/hashicorp/go-plugin ]]; then
	pkgs=(golang-go golang-github-hashicorp-go-plugin-dev golang-google-grpc-dev)
	if [[ $(id -u) -ne 0 ]]; then
		echo "$0: Go and/or go-plugin are missing; run as root or: apt-get install -y ${pkgs[*]}" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y "${pkgs[@]}" || { apt-get update && apt-get install -y "${pkgs[@]}"; }
fi

# GOPATH mode, no network, no module flags (-mod is rejected outside modules).
# GOCACHE is explicit because HOME may be unset in CI.
export GO111MODULE=off GOPATH=$gopath GOCACHE=$out/gocache GOFLAGS= GOPROXY=off CGO_ENABLED=0

build() { # build NAME SRCDIR
	local bin=$out/$1 src=$here/$2
	if [[ -x $bin && ! $src/main.go -nt $bin && ! ${BASH_SOURCE[0]} -nt $bin ]]; then
		return 0
	fi
	(cd "$src" && go build -trimpath -o "$bin.tmp" .)
	mv -f "$bin.tmp" "$bin"
	echo "built $bin" >&2
}

build gohost host
build goplugin plugin
