#!/usr/bin/env bash
# `make check-offline`: proves an air-gapped build. Vendors the crates
# (scripts/vendor.sh), copies the tracked sources and the vendor dir to a
# scratch dir, and builds loopp there with `cargo --offline`, an empty
# CARGO_HOME (no registry cache to fall back on) and, as root, no network
# at all (a network namespace with only a down loopback: unshare --net).
#
# The scratch dir is $CARGO_TARGET_DIR/offline-check (OFFLINE_DIR): its
# target dir is kept, so only the first run compiles gRPC's C core.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${OFFLINE_DIR:-${CARGO_TARGET_DIR:-$root/target}/offline-check}
triple=${TARGET_TRIPLE:-x86_64-unknown-linux-gnu}
rm -rf "$work/src" "$work/cargo-home"
mkdir -p "$work/src/.cargo" "$work/cargo-home" "$work/target"

git -C "$root" ls-files -z | (cd "$root" && tar --null -T - -cf -) | tar -xf - -C "$work/src"
"$root/scripts/vendor.sh" "$work/src/vendor"
cat > "$work/src/.cargo/config.toml" <<'TOML'
[source.crates-io]
replace-with = "vendored-sources"

[source.vendored-sources]
directory = "vendor"
TOML

isolate=()
if [[ $(id -u) -eq 0 ]] && unshare --net true 2>/dev/null; then
	isolate=(unshare --net)
	echo "building with no network (unshare --net), offline, empty CARGO_HOME ..." >&2
else
	echo "building offline with an empty CARGO_HOME (not root: network not cut) ..." >&2
fi
cd "$work/src"
start=$(date +%s)
env CARGO_HOME="$work/cargo-home" CARGO_TARGET_DIR="$work/target" \
	RUSTFLAGS="${RUSTFLAGS:--C target-feature=+crt-static}" \
	"${isolate[@]}" cargo build --offline --locked --release --target "$triple" --bins
bin="$work/target/$triple/release/loopp"
"$bin" --version >/dev/null
echo "check-offline: built $bin offline in $(($(date +%s) - start)) s" >&2
rm -rf "$work/src" "$work/cargo-home"
