#!/usr/bin/env bash
# Links the programs of the multi-call binary to it, the way `make install`
# does, in a directory of the build (make run and make probe start the
# plugins by these names, as a host does).
#
#   scripts/links.sh BINARY DIR NAME...
set -euo pipefail
bin=$1 dir=$2
shift 2
mkdir -p "$dir"
for name in "$@"; do
	ln -sfn "$bin" "$dir/$name"
done
