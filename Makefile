# loopp: build, test, run, benchmark, install.
#
#   make run       build loopp and run the node's main job (Ctrl-C stops)
#   make probe     build loopp and probe the example plugin
#   make test      unit + integration tests, on the build `make run` uses
#                  (installs cmake, Go, go-plugin, Prometheus, buildah if missing)
#   make soak      the default job + 100 feeds for SOAK_SECS (600), resources sampled
#   make bench     loopp vs go-plugin (start, RPC); node recovery, idle RSS/CPU;
#                  metrics proxy; feeds at scale; the binary's size and footprint
#   make static    build, then print the size of the stripped binary and where it goes
#   make image     the container image (Dockerfile, FROM scratch) with buildah
#   make install   loopp and its links (loopp-node, loopp-median, ...) into
#                  $(DESTDIR)$(PREFIX)/bin, stripped
#   make install-<plugin>   loopp and one plugin's link, e.g. make install-median
#   make install-service    the systemd unit (contrib/loopp.service)
#   make uninstall          remove what install and install-service put
#   make vendor    vendored crates for air-gapped builds (cargo build --offline)
#   make check-offline      prove it: vendor, then build with no network and
#                  an empty cargo home
#   make symbol-order       record what idle processes and a feed run (valgrind,
#                  then perf): the link's function order, contrib/symbol-order.txt

PREFIX ?= /usr/local
DESTDIR ?=
BINDIR := $(DESTDIR)$(PREFIX)/bin
CARGO ?= cargo
TARGET_TRIPLE ?= x86_64-unknown-linux-gnu

# The build dir lives outside the clone so CI and fresh clones reuse the
# gRPC C core build.
CARGO_TARGET_DIR ?= $(shell if mkdir -p /var/cache/loopp-target 2>/dev/null && [ -w /var/cache/loopp-target ]; then echo /var/cache/loopp-target; else echo $(CURDIR)/target; fi)
export CARGO_TARGET_DIR

# One build for everything: the release profile, static (glibc static-pie),
# for an explicit target (so build scripts and proc macros stay dynamic).
# `make run`, `make test`, `make bench` and `make install` all use it, so
# gRPC's C core is compiled once. Every cargo command below passes the
# same flags: a different RUSTFLAGS would rebuild everything.
export RUSTFLAGS := -C target-feature=+crt-static
# gRPC's C core (and zlib) without C++ exceptions or asynchronous unwind
# tables: the core never throws or catches, and no Rust panic unwinds
# through C frames (an extern "C" boundary aborts), so the tables were dead
# weight: 0.7 MB of the stripped binary, with RPCs no slower (issue 13).
# Cargo tracks these variables: changing them rebuilds the C core.
export CXXFLAGS_$(subst -,_,$(TARGET_TRIPLE)) := -fno-exceptions -fno-asynchronous-unwind-tables
export CFLAGS_$(subst -,_,$(TARGET_TRIPLE)) := -fno-asynchronous-unwind-tables
BUILD_FLAGS := --release --target $(TARGET_TRIPLE)
RELEASE := $(CARGO_TARGET_DIR)/$(TARGET_TRIPLE)/release
LOOPP_BIN := $(RELEASE)/loopp

# The programs of the multi-call binary, installed as links to it: a host
# starts a plugin by command name (CL_MEDIAN_CMD=loopp-median).
PLUGINS := example devchain median
PROGRAMS := loopp-node $(addprefix loopp-,$(PLUGINS))

.PHONY: all build test soak run probe bench static image install install-service uninstall $(addprefix install-,$(PLUGINS)) vendor check-offline clean deps-build deps-test deps-bench deps-profile symbol-order

all: build

deps-build:
	@scripts/deps.sh build
deps-test:
	@scripts/deps.sh test
deps-bench:
	@scripts/deps.sh bench
deps-profile:
	@scripts/deps.sh profile

build: deps-build
	$(CARGO) build $(BUILD_FLAGS) --bins

# The node with its default job: a devchain relay and a median feed, both as
# LOOPPs, each round printed; chain file under ./loopp-data. Ctrl-C stops it.
# The plugins are this build's loopp under their link names.
run: build
	@scripts/links.sh $(LOOPP_BIN) $(RELEASE)/programs $(PROGRAMS)
	CL_DEVCHAIN_CMD=$(RELEASE)/programs/loopp-devchain CL_MEDIAN_CMD=$(RELEASE)/programs/loopp-median $(LOOPP_BIN) node run

# The operator's diagnostic on the example plugin.
probe: build
	@scripts/links.sh $(LOOPP_BIN) $(RELEASE)/programs $(PROGRAMS)
	$(LOOPP_BIN) probe --kind example -- $(RELEASE)/programs/loopp-example

# Nextest when present (per-test timeouts from .config/nextest.toml), else
# cargo test. The tests are built in the release profile, for the target
# `make run` builds: they share its dependencies (the C core above all),
# and the soak and scale tests measure optimized binaries.
test: deps-test build
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		timeout 3600 $(CARGO) nextest run $(BUILD_FLAGS) --no-fail-fast; \
	else \
		timeout 3600 $(CARGO) test $(BUILD_FLAGS) --no-fail-fast --bins --lib --test it -- --test-threads=4; \
	fi

# The soak: the default job plus 100 feeds, both plugins as LOOPPs, for
# SOAK_SECS (default 600), RSS, threads and fds of each process sampled
# every 10 s; fails if any grows by more than 10% after the first minute
# (tests/it/soak.rs).
SOAK_SECS ?= 600
soak: deps-test build
	LOOPP_SOAK_SECS=$(SOAK_SECS) LOOPP_SOAK_SAMPLE_SECS=10 \
		timeout $$(( $(SOAK_SECS) + 1200 )) $(CARGO) test $(BUILD_FLAGS) --test it soak_ -- --nocapture

# Static, like the Go programs it is compared with (CGO_ENABLED=0) and like
# what constrained hosts run. The plugin benchmark runs first, on a quiet
# machine.
bench: deps-bench build
	$(CARGO) bench --target $(TARGET_TRIPLE) --bench plugin
	$(CARGO) bench --target $(TARGET_TRIPLE) --bench node
	$(CARGO) bench --target $(TARGET_TRIPLE) --bench http
	$(CARGO) bench --target $(TARGET_TRIPLE) --bench feed
	$(CARGO) bench --target $(TARGET_TRIPLE) --bench scale

# The shipped binary: stripped, in $(RELEASE)/dist; its size against the
# budget and where the bytes go (scripts/size.sh).
DIST := $(RELEASE)/dist
static: build
	@$(MAKE) --no-print-directory $(DIST)/loopp
	@scripts/size.sh $(LOOPP_BIN) $(DIST)/loopp

$(DIST)/loopp: $(LOOPP_BIN)
	@mkdir -p $(DIST)
	strip -o $@ $<

# The container image: loopp FROM scratch (Dockerfile), built with buildah
# (no daemon, no registry). IMAGE names it.
IMAGE ?= localhost/loopp:latest
image: static
	scripts/image.sh $(DIST)/loopp $(IMAGE)

# NO_BUILD=1 installs what is already built (the tests do).
INSTALL_DEP := $(if $(NO_BUILD),,build)

install: $(INSTALL_DEP)
	@$(MAKE) --no-print-directory $(DIST)/loopp
	install -d $(BINDIR)
	install -m 0755 $(DIST)/loopp $(BINDIR)/loopp
	for p in $(PROGRAMS); do ln -sf loopp $(BINDIR)/$$p; done

$(addprefix install-,$(PLUGINS)): install-%: $(INSTALL_DEP)
	@$(MAKE) --no-print-directory $(DIST)/loopp
	install -d $(BINDIR)
	install -m 0755 $(DIST)/loopp $(BINDIR)/loopp
	ln -sf loopp $(BINDIR)/loopp-$*

# The systemd unit, with PREFIX/bin in its paths (`make install` does not
# install it unless asked).
SYSTEMD_DIR := $(DESTDIR)$(PREFIX)/lib/systemd/system
install-service:
	install -d $(SYSTEMD_DIR)
	sed 's|/usr/local/bin/|$(PREFIX)/bin/|g' contrib/loopp.service > $(SYSTEMD_DIR)/loopp.service
	chmod 0644 $(SYSTEMD_DIR)/loopp.service

# Removes what install and install-service put in place.
uninstall:
	rm -f $(BINDIR)/loopp $(addprefix $(BINDIR)/,$(PROGRAMS)) $(SYSTEMD_DIR)/loopp.service

# Vendored crates (platforms other than Linux left out: scripts/vendor.sh),
# and the cargo config that builds from them.
vendor:
	scripts/vendor.sh vendor
	mkdir -p .cargo
	printf '[source.crates-io]\nreplace-with = "vendored-sources"\n\n[source.vendored-sources]\ndirectory = "vendor"\n' > .cargo/config.toml
	@echo "vendored: build offline with 'cargo build --offline' (undo: rm -r vendor .cargo)"

# Vendor, then build in a scratch copy offline, with an empty cargo home and
# no network (scripts/check-offline.sh). The first run compiles the C core.
check-offline: deps-build
	scripts/check-offline.sh

# The link's function order, contrib/symbol-order.txt (scripts/symbol-order.sh,
# about 15 min): what an idle node, devchain and median run, then what a feed
# adds, then what only starting runs, recorded under callgrind from this
# build; then refined: rebuilt with the order, the three run idle under perf,
# and each function whose code they fault back in joins the idle part, until
# a pass finds none (at most 6 passes of a build and 40 s). lld lays the
# functions out in that order at the start of .text (build.rs): an idle
# process that gave back its start-up code (src/pages.rs) maps under 1 MB of
# code, not 4, and a start faults in a fourth of the code windows. Rerun when
# what idle processes run changes; `make bench` (footprint) shows when it is
# due. The binary is left built with the new order.
symbol-order: deps-profile build
	scripts/symbol-order.sh $(LOOPP_BIN) contrib/symbol-order.txt
	@for pass in 1 2 3 4 5 6; do \
		$(MAKE) --no-print-directory build >/dev/null || exit 1; \
		scripts/symbol-order.sh --refine $(LOOPP_BIN) contrib/symbol-order.txt; rc=$$?; \
		[ $$rc -eq 3 ] && exit 0; [ $$rc -eq 0 ] || exit $$rc; \
	done; $(MAKE) --no-print-directory build >/dev/null

clean:
	$(CARGO) clean
