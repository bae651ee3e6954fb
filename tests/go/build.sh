#!/usr/bin/env bash
# Build the go-plugin interop programs used by loopp's tests and benchmark.
#
#   tests/go/build.sh OUTDIR   ->  OUTDIR/gohost, OUTDIR/goplugin,
#                                  OUTDIR/gorelayer, OUTDIR/gogolden, OUTDIR/gomedian,
#                                  OUTDIR/gonode
#
# Offline, GOPATH mode, against Debian's packaged go-plugin 1.0.1 / grpc-go
# in /usr/share/gocode. The LOOP test programs (gorelayer) use Go code that
# protoc generates here from loopp's own proto/ files, into OUTDIR/gopath
# (package loopp/pb), beside tests/go/golang (package loopp/golang). Installs those packages with apt-get if missing (root
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

if ! command -v go >/dev/null || ! command -v protoc-gen-go-grpc >/dev/null ||
	[[ ! -d $gopath/src/github.com/hashicorp/go-plugin ]] ||
	[[ ! -d $gopath/src/google.golang.org/protobuf ]]; then
	pkgs=(golang-go golang-github-hashicorp-go-plugin-dev golang-google-grpc-dev
		golang-google-protobuf-dev protobuf-compiler protoc-gen-go protoc-gen-go-grpc)
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

# The LOOP programs: Go code from loopp's protos, then the programs.
protos=$(cd "$here/../../proto" && pwd)
lib=$out/gopath/src/loopp
stamp=$out/gopath/.generated
if [[ ! -f $stamp || -n $(find "$protos" "$here/golang" "${BASH_SOURCE[0]}" -newer "$stamp" -print -quit) ]]; then
	rm -rf "$lib"
	mkdir -p "$lib/pb" "$lib/golang"
	maps=()
	for f in "$protos"/*.proto; do
		f=$(basename "$f")
		maps+=("--go_opt=M$f=loopp/pb" "--go-grpc_opt=M$f=loopp/pb")
	done
	(cd "$protos" && protoc -I . -I /usr/include "${maps[@]}" \
		--go_out="$out/gopath/src" --go-grpc_out="$out/gopath/src" \
		$(ls *.proto | grep -v -e '^grpc_' -e '^health' -e '^example' -e '^loopp_'))
	cp "$here"/golang/*.go "$lib/golang/"
	touch "$stamp"
fi
export GOPATH=$out/gopath:$gopath
build_loop() { # build_loop NAME SRCDIR
	local bin=$out/$1 src=$here/$2
	if [[ -x $bin && ! $src/main.go -nt $bin && ! $stamp -nt $bin ]]; then
		return 0
	fi
	(cd "$src" && go build -trimpath -o "$bin.tmp" .)
	mv -f "$bin.tmp" "$bin"
	echo "built $bin" >&2
}
build_loop gorelayer relayer
build_loop gogolden golden
build_loop gomedian median
build_loop gonode node
