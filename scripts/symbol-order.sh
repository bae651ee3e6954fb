#!/usr/bin/env bash
# Writes the link's symbol order (contrib/symbol-order.txt): the functions
# the node, the devchain relayer and the median plugin run once they are up
# and idle, then those a node running the default job's feed runs, then
# those they ran only while starting.
#
#   scripts/symbol-order.sh LOOPP_BIN OUT [IDLE_SECS] [FEED_SECS]
#   scripts/symbol-order.sh --refine LOOPP_BIN ORDER [SECS]
#
# Why: an idle process gives its start-up code back (src/pages.rs) and keeps
# mapped only the pages it touches again. The kernel maps code 64 KiB at a
# time, so the ~350 KB an idle process runs, scattered over the 5.7 MB of
# code, would map most of it again; in this order they sit together at the
# start of .text. A start touches code all over the binary too, one fault
# for each 64 KiB, so what only starting runs follows in a block of its
# own. lld reads the file (build.rs); names the binary no longer has are
# skipped, so a stale order costs memory and time, never correctness.
#
# How (record): the three processes run under valgrind's callgrind; its
# counters are dumped (start-up) and zeroed once they are up and settled,
# and dumped again after IDLE_SECS (default 60); then the default job (a
# feed, both plugins as LOOPPs) runs FEED_SECS (default 60) the same way.
# The functions with a cost in a dump are the ones that ran.
# With each string function glibc picks by CPU (memcpy, strlen...) that ran
# go all its variants: valgrind's emulated CPU picks other ones than the
# machines loopp runs on, and those differ from machine to machine too.
#
# A recording alone misses what real processes run: valgrind runs them some
# fifty times slower, so what follows the give-back by seconds (a pool
# thread ending, the give-back's own return path) falls before the zeroing,
# and where the system calls it lacks (pidfd_open) fail, loopp takes other
# paths. So (--refine) the node and both plugins, from LOOPP_BIN built with
# ORDER, run idle under `perf record` for SECS (default 40), every page
# fault recorded: from each process's give-back on (its fault in
# `__madvise`, returning into the code just unmapped), a fault at an
# instruction is the first call into a 64 KiB window of code that is not
# mapped, so a function that faults there and is not in ORDER's idle part
# belongs in it. They are added; rebuild and repeat until none is (exit 3).
# `make symbol-order` does both.
set -euo pipefail

usage="usage: $0 LOOPP_BIN OUT [IDLE_SECS] [FEED_SECS] | $0 --refine LOOPP_BIN ORDER [SECS]"
refine=
if [[ ${1:-} == --refine ]]; then
	refine=1
	shift
fi
bin=${1:?$usage}
out=${2:?$usage}
if [[ -n $refine ]]; then
	secs=${3:-40}
	command -v perf >/dev/null || { echo "$0: perf is missing (make symbol-order installs it: linux-perf)" >&2; exit 1; }
	[[ -f $out ]] || { echo "$0: $out: no order to refine; record one first ($0 LOOPP_BIN $out)" >&2; exit 1; }
else
	idle_secs=${3:-60}
	feed_secs=${4:-60}
	command -v valgrind >/dev/null || { echo "$0: valgrind is missing (make symbol-order installs it)" >&2; exit 1; }
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/loopp-symbol-order.XXXXXX")
node_pid=
cleanup() {
	[[ -n $node_pid ]] && kill "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

for p in loopp-node loopp-devchain loopp-median; do ln -s "$(realpath "$bin")" "$work/$p"; done
cat >"$work/idle.json" <<EOF
{"data_dir": "$work/idle-data", "http": {"listen": "off"},
 "plugins": [{"name": "devchain", "kind": "relayer"}, {"name": "median", "kind": "median"}]}
EOF

# variants FILE...: every variant in the binary of the glibc string
# functions named in FILEs (__memcpy_avx_unaligned_erms: all __memcpy_*).
variants() {
	local families
	families=$(sed -n -E 's/^(__(mem|str|stp|wmem|wcs|raw)[a-z]*)_(sse2|ssse3|sse4|avx|evex|erms).*$/\1/p' "$@" | LC_ALL=C sort -u)
	[[ -n $families ]] || return 0
	[[ -s $work/names.txt ]] || nm --defined-only "$bin" | awk '{print $3}' >"$work/names.txt"
	{ grep -E "^($(paste -sd'|' <<<"$families"))_(sse2|ssse3|sse4|avx|evex|erms)" "$work/names.txt" || true; } | LC_ALL=C sort -u
}

# write IDLE FEED START: OUT, IDLE's functions, then FEED's and START's
# not named before, in their order, under the header whose counts --refine
# reads back.
write() {
	# after SEEN... FILE: FILE's lines not in SEENs, each once, in order
	after() { awk 'FILENAME != ARGV[ARGC - 1] { seen[$0]; next } !($0 in seen) { seen[$0]; print }' "$@"; }
	after /dev/null "$1" >"$work/w-idle.txt"
	after "$work/w-idle.txt" "$2" >"$work/w-feed.txt"
	after "$work/w-idle.txt" "$work/w-feed.txt" "$3" >"$work/w-start.txt"
	{
		echo "# The link's symbol order (scripts/symbol-order.sh, make symbol-order): what an"
		echo "# idle node, devchain and median run ($(wc -l <"$work/w-idle.txt") functions), then what a feed adds"
		echo "# ($(wc -l <"$work/w-feed.txt")), then what only starting runs ($(wc -l <"$work/w-start.txt")). Generated; edit the script, not this file."
		cat "$work/w-idle.txt" "$work/w-feed.txt" "$work/w-start.txt"
	} >"$out"
}

if [[ -n $refine ]]; then
	idle_n=$(sed -n '2s/.*(\([0-9]*\) functions).*/\1/p' "$out")
	feed_n=$(sed -n '3s/^# (\([0-9]*\)).*/\1/p' "$out")
	[[ -n $idle_n && -n $feed_n ]] || { echo "$0: $out: no counts in its header; record it again" >&2; exit 1; }
	# part N: the order's idle (1), feed (2) or start-up (3) part
	part() { awk -v part="$1" -v i="$idle_n" -v f="$feed_n" '!/^#/ { n++; if ((n <= i ? 1 : n <= i + f ? 2 : 3) == part) print }' "$out"; }
	part 1 | LC_ALL=C sort -u >"$work/idle.txt"
	part 2 >"$work/feed.txt"
	part 3 >"$work/start.txt"
	mkfifo "$work/ctl"
	(cd "$work" && RUST_LOG=warn PLUGIN_UNIX_SOCKET_DIR=$work \
		CL_DEVCHAIN_CMD=$work/loopp-devchain CL_MEDIAN_CMD=$work/loopp-median \
		exec perf record -q -e page-faults -c 1 -d --control "fifo:$work/ctl" -o "$work/faults.data" \
		-- "$work/loopp-node" run --config "$work/idle.json" >"$work/refine.log" 2>&1) &
	node_pid=$!
	exec 3<>"$work/ctl" # read-write: opening it never waits for perf
	sleep "$secs"
	echo disable >&3 # the stop's code is no idle code
	sleep 1
	pkill -TERM -P "$node_pid" -x loopp-node || true
	wait "$node_pid" 2>/dev/null || true
	node_pid=
	exec 3>&-
	# perf script: PID TIME: ADDR ADDR-SYMBOL IP IP-SYMBOL (mangled names:
	# no spaces). Read twice: the give-backs, then the faults. A give-back
	# comes seconds after a process's first fault (pages::SETTLE after it
	# is ready); an earlier fault in __madvise is start-up's, not one.
	perf script -i "$work/faults.data" -F pid,time,ip,sym,addr --no-demangle 2>/dev/null >"$work/faults.txt"
	awk -v backs="$work/backs.txt" '{ sub(/:$/, "", $2); $2 += 0 }
		NR == FNR {
			if (!($1 in first)) first[$1] = $2
			if ($6 == "__madvise" && $3 == $5 && $2 - first[$1] >= 3) back[$1] = $2
			next
		}
		FNR == 1 { for (p in back) n++; print n + 0 > backs }
		($1 in back) && $2 >= back[$1] && $3 == $5 && $6 != "[unknown]" { print $6 }' \
		"$work/faults.txt" "$work/faults.txt" | LC_ALL=C sort -u >"$work/faulted.txt"
	(($(cat "$work/backs.txt" 2>/dev/null || echo 0) >= 3)) ||
		{ echo "$0: no give-back seen in the node and both plugins within ${secs}s; see the log:" >&2; cat "$work/refine.log" >&2; exit 1; }
	LC_ALL=C comm -23 "$work/faulted.txt" "$work/idle.txt" >"$work/faulted-new.txt"
	variants "$work/faulted-new.txt" >"$work/variants.txt"
	LC_ALL=C sort -u "$work/faulted-new.txt" "$work/variants.txt" | LC_ALL=C comm -23 - "$work/idle.txt" >"$work/new.txt"
	if [[ ! -s $work/new.txt ]]; then
		echo "$out: refined: nothing new ($idle_n idle functions)" >&2
		exit 3
	fi
	# Kept in the order they were: what was there stays where it was.
	{ part 1; cat "$work/new.txt"; } >"$work/idle-next.txt"
	write "$work/idle-next.txt" "$work/feed.txt" "$work/start.txt"
	echo "$out: refined: $(wc -l <"$work/new.txt") more idle functions ($(wc -l <"$work/idle-next.txt") in all)" >&2
	exit 0
fi

# Each program under callgrind; the node starts its plugins through these.
for p in loopp-node loopp-devchain loopp-median; do
	cat >"$work/vg-$p" <<EOF
#!/bin/sh
exec valgrind -q --tool=callgrind --demangle=no --dump-instr=no --callgrind-out-file=$work/\$PHASE.%p.out $work/$p "\$@"
EOF
	chmod +x "$work/vg-$p"
done

# phase NAME SECS NODE-ARGS...: run the node, wait for it and both plugins
# to be up and settled, dump (NAME.*.out.1: start-up) and zero the
# counters, wait SECS, dump (NAME.*.out.2), stop.
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
	callgrind_control -d >/dev/null
	callgrind_control -z >/dev/null
	sleep "$secs"
	callgrind_control -d >/dev/null
	kill "$node_pid"
	wait "$node_pid" 2>/dev/null || true
	node_pid=
}

phase idle "$idle_secs" run --config "$work/idle.json"
phase feed "$feed_secs" run --http off

# functions NAME N: the functions with a cost in NAME's Nth dumps, without
# callgrind's recursion marks and names it could not resolve; with all
# variants of the glibc string functions among them.
functions() {
	awk '
		FNR == 1 { delete names }
		match($0, /^c?fn=\([0-9]+\)/) {
			id = substr($0, RSTART, RLENGTH); sub(/^c?fn=/, "", id)
			name = substr($0, RLENGTH + 2)
			if (name != "") names[id] = name
			if ($0 ~ /^fn=/) print names[id]
		}' "$work"/"$1".*.out."$2" |
		sed "s/'[0-9]*\$//" | grep -v -e '^0x' -e '^(' -e '^$' | LC_ALL=C sort -u >"$work/recorded.txt"
	LC_ALL=C sort -u "$work/recorded.txt" <(variants "$work/recorded.txt")
}
functions idle 2 >"$work/idle.txt"
functions feed 2 >"$work/feed.txt"
{ functions idle 1; functions feed 1; } >"$work/start.txt"
write "$work/idle.txt" "$work/feed.txt" "$work/start.txt"
echo "$out: $(wc -l <"$work/w-idle.txt") idle functions, $(wc -l <"$work/w-feed.txt") more for a feed, $(wc -l <"$work/w-start.txt") more for starting" >&2
