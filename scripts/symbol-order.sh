#!/usr/bin/env bash
# Writes the link's symbol order (contrib/symbol-order.txt): the functions
# the node, the devchain relayer and the median plugin run once they are up
# and idle, then those a node running the default job's feed runs.
#
#   scripts/symbol-order.sh LOOPP_BIN OUT [IDLE_SECS] [FEED_SECS]
#
# Why: an idle process gives its start-up code back (src/pages.rs) and keeps
# mapped only the pages it touches again. The kernel maps code 64 KiB at a
# time, so the ~350 KB an idle process runs, scattered over the 5.7 MB of
# code, would map most of it again; in this order they sit together at the
# start of .text. lld reads the file (build.rs); names the binary no longer
# has are skipped, so a stale order costs memory, never correctness.
#
# How: the three processes run under valgrind's callgrind; its counters are
# zeroed once they are up, and dumped after IDLE_SECS (default 60); then the
# default job (a feed, both plugins as LOOPPs) runs FEED_SECS (default 60).
# The functions with a cost in a dump are the ones that ran.
set -euo pipefail

bin=${1:?usage: $0 LOOPP_BIN OUT [IDLE_SECS] [FEED_SECS]}
out=${2:?usage: $0 LOOPP_BIN OUT [IDLE_SECS] [FEED_SECS]}
idle_secs=${3:-60}
feed_secs=${4:-60}
command -v valgrind >/dev/null || { echo "$0: valgrind is missing (make symbol-order installs it)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/loopp-symbol-order.XXXXXX")
node_pid=
cleanup() {
	[[ -n $node_pid ]] && kill "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

for p in loopp-node loopp-devchain loopp-median; do ln -s "$(realpath "$bin")" "$work/$p"; done
# Each program under callgrind; the node starts its plugins through these.
for p in loopp-node loopp-devchain loopp-median; do
	cat >"$work/vg-$p" <<EOF
#!/bin/sh
exec valgrind -q --tool=callgrind --demangle=no --dump-instr=no --callgrind-out-file=$work/\$PHASE.%p.out $work/$p "\$@"
EOF
	chmod +x "$work/vg-$p"
done

# phase NAME SECS NODE-ARGS...: run the node, wait for it and both plugins
# to be up and settled, zero the counters, wait SECS, dump, stop.
phase() {
	local name=$1 secs=$2
	shift 2
	(cd "$work" && PHASE=$name RUST_LOG=warn PLUGIN_UNIX_SOCKET_DIR=$work \
		CL_DEVCHAIN_CMD=$work/vg-loopp-devchain CL_MEDIAN_CMD=$work/vg-loopp-median \
		exec "$work/vg-loopp-node" "$@" >"$work/$name.log" 2>&1) &
	node_pid=$!
	local deadline=$((SECONDS + 120))
	until [[ $(callgrind_control 2>/dev/null | grep -c '^PID') -ge 3 ]]; do
		((SECONDS < deadline)) || { echo "$0: $name: the node and its plugins did not start" >&2; cat "$work/$name.log" >&2; exit 1; }
		sleep 1
	done
	sleep 20 # settled: start-up is over, the code it ran given back
	callgrind_control -z >/dev/null
	sleep "$secs"
	callgrind_control -d >/dev/null
	kill "$node_pid"
	wait "$node_pid" 2>/dev/null || true
	node_pid=
}

cat >"$work/idle.json" <<EOF
{"data_dir": "$work/idle-data", "http": {"listen": "off"},
 "plugins": [{"name": "devchain", "kind": "relayer"}, {"name": "median", "kind": "median"}]}
EOF
phase idle "$idle_secs" run --config "$work/idle.json"
phase feed "$feed_secs" run --http off

# functions NAME: the functions with a cost in NAME's dumps (the ".1" files:
# the dumps asked for after zeroing), without callgrind's recursion marks
# and names it could not resolve.
functions() {
	awk '
		FNR == 1 { delete names }
		match($0, /^c?fn=\([0-9]+\)/) {
			id = substr($0, RSTART, RLENGTH); sub(/^c?fn=/, "", id)
			name = substr($0, RLENGTH + 2)
			if (name != "") names[id] = name
			if ($0 ~ /^fn=/) print names[id]
		}' "$work"/"$1".*.out.1 |
		sed "s/'[0-9]*\$//" | grep -v -e '^0x' -e '^(' -e '^$' | LC_ALL=C sort -u
}
functions idle >"$work/idle.txt"
functions feed | LC_ALL=C comm -23 - "$work/idle.txt" >"$work/feed.txt"
{
	echo "# The link's symbol order (scripts/symbol-order.sh, make symbol-order): what an"
	echo "# idle node, devchain and median run ($(wc -l <"$work/idle.txt") functions), then what a feed adds"
	echo "# ($(wc -l <"$work/feed.txt")). Generated; edit the script, not this file."
	cat "$work/idle.txt" "$work/feed.txt"
} >"$out"
echo "$out: $(wc -l <"$work/idle.txt") idle functions, $(wc -l <"$work/feed.txt") more for a feed" >&2
