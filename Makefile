# loopp: build, test, run, benchmark, install.
#
#   make run       build everything and run the node's main job (Ctrl-C stops)
#   make probe     build everything and probe the example plugin
#   make test      unit + integration tests (installs cmake, Go, go-plugin if missing)
#   make soak      the default job + 100 feeds for SOAK_SECS (600), resources sampled
#   make bench     loopp vs go-plugin (start, RPC); node recovery, idle RSS/CPU;
#                  metrics proxy overhead and throughput
#   make static    a fully static loopp-node (glibc static-pie)
#   make install   loopp-node and every plugin into $(DESTDIR)$(PREFIX)/bin
#   make install-<plugin>   one plugin, e.g. make install-example
#   make install-service    the systemd unit (contrib/loopp.service)
#   make uninstall          remove what install and install-service put
#   (STATIC=1 make install ... installs the static binaries)
#   make vendor    vendored crates for air-gapped builds (cargo build --offline)

PREFIX ?= /usr/local
DESTDIR ?=
BINDIR := $(DESTDIR)$(PREFIX)/bin
CARGO ?= cargo
TARGET_TRIPLE ?= x86_64-unknown-linux-gnu

# The build dir lives outside the clone so CI and fresh clones reuse the
# ~7 minute gRPC C core build.
CARGO_TARGET_DIR ?= $(shell if mkdir -p /var/cache/loopp-target 2>/dev/null && [ -w /var/cache/loopp-target ]; then echo /var/cache/loopp-target; else echo $(CURDIR)/target; fi)
export CARGO_TARGET_DIR

# Plugins shipped as their own binaries (loopp-<name>).
PLUGINS := example devchain median
BINS := loopp-node $(addprefix loopp-,$(PLUGINS))
RELEASE := $(CARGO_TARGET_DIR)/release

.PHONY: all build test soak run probe bench static install install-service uninstall $(addprefix install-,$(PLUGINS)) vendor clean deps-build deps-test deps-bench

all: build

deps-build:
	@scripts/deps.sh build
deps-test:
	@scripts/deps.sh test
deps-bench:
	@scripts/deps.sh bench

build: deps-build
	$(CARGO) build --release --bins

# The node with its default job: a devchain relay and a median feed, both as
# LOOPPs, each round printed; chain file under ./loopp-data. Ctrl-C stops it.
run: build
	CL_DEVCHAIN_CMD=$(RELEASE)/loopp-devchain CL_MEDIAN_CMD=$(RELEASE)/loopp-median $(RELEASE)/loopp-node run

# The operator's diagnostic on the example plugin.
probe: build
	$(RELEASE)/loopp-node probe --kind example -- $(RELEASE)/loopp-example

# Nextest when present (per-test timeouts from .config/nextest.toml), else cargo test.
# The soak's 60-second version runs on the release binaries (what `make run`
# builds): 100 feeds on unoptimized ones saturate a 2-core machine.
test: deps-test build
	$(CARGO) build --tests --bins
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		LOOPP_SOAK_BIN_DIR=$(RELEASE) timeout 3600 $(CARGO) nextest run --no-fail-fast; \
	else \
		LOOPP_SOAK_BIN_DIR=$(RELEASE) timeout 3600 $(CARGO) test --no-fail-fast --lib --test it -- --test-threads=4; \
	fi

# The soak: the default job plus 100 feeds, both plugins as LOOPPs, on the
# release binaries for SOAK_SECS (default 600), RSS, threads and fds of each
# process sampled every 10 s; fails if any grows by more than 10% after the
# first minute (tests/it/soak.rs).
SOAK_SECS ?= 600
soak: deps-test build
	$(CARGO) build --tests --bins
	LOOPP_SOAK_BIN_DIR=$(RELEASE) LOOPP_SOAK_SECS=$(SOAK_SECS) LOOPP_SOAK_SAMPLE_SECS=10 \
		timeout $$(( $(SOAK_SECS) + 300 )) $(CARGO) test --test it soak_ -- --nocapture

# Static, like the Go programs it is compared with (CGO_ENABLED=0) and like
# what constrained hosts run; shares its build with `make static`.
# The plugin benchmark runs first, on a quiet machine.
bench: deps-bench
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) bench --bench plugin --target $(TARGET_TRIPLE)
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) bench --bench node --target $(TARGET_TRIPLE)
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) bench --bench http --target $(TARGET_TRIPLE)
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) bench --bench feed --target $(TARGET_TRIPLE)
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) bench --bench scale --target $(TARGET_TRIPLE)

static: deps-build
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release --bins --target $(TARGET_TRIPLE)
	@echo "static binaries in $(CARGO_TARGET_DIR)/$(TARGET_TRIPLE)/release/"

# STATIC=1 installs the static binaries (built by `make static`).
ifeq ($(STATIC),1)
INSTALL_FROM := $(CARGO_TARGET_DIR)/$(TARGET_TRIPLE)/release
INSTALL_DEP := static
else
INSTALL_FROM := $(RELEASE)
INSTALL_DEP := build
endif

install: $(INSTALL_DEP)
	install -d $(BINDIR)
	install -m 0755 $(addprefix $(INSTALL_FROM)/,$(BINS)) $(BINDIR)/

$(addprefix install-,$(PLUGINS)): install-%: $(INSTALL_DEP)
	install -d $(BINDIR)
	install -m 0755 $(INSTALL_FROM)/loopp-$* $(BINDIR)/

# The systemd unit, with PREFIX/bin in its paths (`make install` does not
# install it unless asked).
SYSTEMD_DIR := $(DESTDIR)$(PREFIX)/lib/systemd/system
install-service:
	install -d $(SYSTEMD_DIR)
	sed 's|/usr/local/bin/|$(PREFIX)/bin/|g' contrib/loopp.service > $(SYSTEMD_DIR)/loopp.service
	chmod 0644 $(SYSTEMD_DIR)/loopp.service

# Removes what install and install-service put in place.
uninstall:
	rm -f $(addprefix $(BINDIR)/,$(BINS)) $(SYSTEMD_DIR)/loopp.service

vendor:
	$(CARGO) vendor --quiet --locked vendor > /dev/null
	mkdir -p .cargo
	printf '[source.crates-io]\nreplace-with = "vendored-sources"\n\n[source.vendored-sources]\ndirectory = "vendor"\n' > .cargo/config.toml
	@echo "vendored: build offline with 'cargo build --offline' (undo: rm -r vendor .cargo)"

clean:
	$(CARGO) clean
