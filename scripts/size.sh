#!/usr/bin/env bash
# The shipped binary's size and where its bytes go.
#
#   scripts/size.sh BINARY STRIPPED
#
# STRIPPED is BINARY stripped (what `make install` and the image ship; the
# Makefile makes it). Prints its size against the budget (BUDGET_BYTES,
# 8 MB), then the file's sections and, from BINARY's symbol table, the code and data by origin:
# gRPC's C core, the C and C++ runtimes, each Rust crate (after LTO, a
# function is counted in the crate that defines it). Sizes in MB (10^6 B).
set -euo pipefail
bin=$1 out=$2
budget=${BUDGET_BYTES:-8000000}
bytes=$(stat -c %s "$out")
static=no
if ! readelf -d "$out" 2>/dev/null | grep -q NEEDED; then static=yes; fi
met=false
[[ $bytes -le $budget ]] && met=true
awk -v f="$out" -v b="$bytes" -v s="$static" -v g="$budget" -v m="$met" 'BEGIN {
	printf "%s: %.2f MB stripped (%d bytes), static: %s; budget %.2f MB, met: %s\n", f, b / 1e6, b, s, g / 1e6, m }'

echo
echo "sections of the stripped binary:"
size -A "$out" | awk '
	$1 ~ /^\./ && $2 > 0 {
		n = $1
		if (n == ".text") g = "code (.text)"
		else if (n ~ /^\.(eh_frame|eh_frame_hdr|gcc_except_table)$/) g = "unwind tables (.eh_frame, .gcc_except_table)"
		else if (n ~ /^\.(rodata|rodata\..*)$/) g = "constants (.rodata)"
		else if (n ~ /^\.(data\.rel\.ro|rela\.dyn|init_array|fini_array|got|got\.plt|tdata|relr\.dyn)$/) g = "relocated data (.data.rel.ro, .rela.dyn, .relr.dyn, .got, ...)"
		else if (n ~ /^\.(bss|tbss)$/) next
		else g = "other (.data, notes, ...)"
		s[g] += $2
	}
	END { for (g in s) printf "  %6.2f MB  %s\n", s[g] / 1e6, g }' | sort -rn

echo
echo "code and data by origin (symbol sizes of the unstripped binary):"
nm -S -t d --size-sort "$bin" 2>/dev/null | awk '
	NF >= 4 {
		sz = $2 + 0; name = $4
		if (name ~ /^_ZN.*17h[0-9a-f]+E$/) {
			# Rust (legacy mangling): the first path segment is the crate.
			match(name, /^_ZN[0-9]+/)
			len = substr(name, 4, RLENGTH - 3) + 0
			seg = substr(name, RLENGTH + 1, len)
			sub(/^_\$LT\$/, "", seg); sub(/\.\..*$/, "", seg); sub(/\$.*$/, "", seg)
			if (seg ~ /^(std|core|alloc|panic_unwind|std_detect|gimli|addr2line|rustc_demangle|miniz_oxide|object|hashbrown)$/) g = "Rust std, core, alloc"
			else if (seg == "") g = "Rust (trait impls on generic types)"
			else g = "Rust " seg
		} else if (name ~ /^_Z/) {
			if (name ~ /grpc|absl|upb|re2|ares/) g = "gRPC C core (C++: grpc, absl, upb, re2, c-ares)"
			else if (name ~ /^_Z(N|NK|T[VIS])?St|^_ZN(K)?9__gnu_cxx|^_ZNSt|^_ZS/) g = "C++ standard library"
			else g = "gRPC C core (C++: grpc, absl, upb, re2, c-ares)"
		} else if (name ~ /^(grpc|gpr_|upb_|_upb|ares_|address_sorting|census|grpcwrap)/) {
			g = "gRPC C core (C: grpc, gpr, upb, c-ares, grpcio wrapper)"
		} else if (name ~ /^(deflate|inflate|crc32|adler32|zcalloc|zcfree|_tr_|z_|zError|zlibVersion|compress|uncompress|get_crc_table)/) {
			g = "zlib"
		} else {
			g = "other C: glibc and libgcc (static), unprefixed gRPC C functions"
		}
		s[g] += sz; t += sz
	}
	END {
		for (g in s) if (s[g] >= 20000) printf "  %6.2f MB  %s\n", s[g] / 1e6, g; else rest += s[g]
		printf "  %6.2f MB  %s\n", rest / 1e6, "smaller crates (under 20 KB each)"
		printf "  %6.2f MB  %s\n", t / 1e6, "TOTAL (symbols)"
	}' | sort -rn
