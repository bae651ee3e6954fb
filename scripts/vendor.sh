#!/usr/bin/env bash
# Vendors every crate loopp builds with into DIR, for air-gapped builds.
#
#   scripts/vendor.sh DIR
#
# With cargo-vendor-filterer (installed from crates.io when missing) the
# crates of other platforms (Windows, macOS: ~200 MB of the ~355 MB) are
# left out as empty stubs; VENDOR_PLATFORMS lists the targets kept. Without
# it (VENDOR_FILTER=0), plain `cargo vendor`. Crates' tests and benches are
# left out too: a build does not read them.
set -euo pipefail
dir=$1
platforms=${VENDOR_PLATFORMS:-x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu}
cd "$(dirname "$0")/.."
if [[ ${VENDOR_FILTER:-1} == 1 ]]; then
	if ! cargo vendor-filterer --help >/dev/null 2>&1; then
		echo "installing cargo-vendor-filterer (crates.io) ..." >&2
		cargo install --locked --quiet cargo-vendor-filterer
	fi
	args=()
	for p in $platforms; do args+=("--platform=$p"); done
	# Its notes on crates without tests or benches are noise here.
	cargo vendor-filterer "${args[@]}" --exclude-crate-path "*#tests" --exclude-crate-path "*#benches" "$dir" 2>&1 >/dev/null |
		{ grep -v -e "No match for exclude" -e "^Removed from crate" -e "^   Vendoring" >&2 || true; }
else
	cargo vendor --quiet --locked "$dir" >/dev/null
fi
echo "vendored into $dir: $(du -sh "$dir" | cut -f1)" >&2
