# Build, test and demo entry points for reconcile-guard.
#
#   make deps    install the Debian packages the build and the tests need (when missing)
#   make build   build the workspace in release mode (target/release/libreconcile.so)
#   make test    deps, build, then every test in the workspace, and the alert rule tests
#   make test-alerts   check deploy/prometheus/reconcile-alerts.yml and run its promtool tests
#   make test-valkey   every test in the workspace again, with Valkey 8 in place of Redis 7.0
#                (fetched from Debian's backports into target/valkey; VALKEY_SERVER overrides)
#   make demo    deps, build, then a walk through the module on a throwaway redis-server
#   make bench   measure the module against plain Redis and write BENCHMARKS.md
#                (BENCH_SHORT=1: a quick smoke run that writes nothing)
#   make lint    rustfmt check and clippy with warnings as errors
#   make fuzz    run every cargo-fuzz target in fuzz/ for FUZZ_SECONDS each (default 300);
#                needs the nightly toolchain, installs cargo-fuzz when missing
#   make clean   remove build output
#
# bindgen finds Debian's libclang through LIBCLANG_PATH in .cargo/config.toml, so plain cargo
# commands work as well as these targets.

CARGO ?= cargo
# Sized for the two-core machines we build on; override with `make JOBS=8`.
JOBS ?= 2

.DEFAULT_GOAL := build
# Seconds each fuzz target runs under `make fuzz`.
FUZZ_SECONDS ?= 300

.PHONY: deps build test test-alerts test-valkey demo bench lint fuzz clean

deps:
	@scripts/deps.sh

build:
	$(CARGO) build --release --workspace --jobs $(JOBS)

# The integration tests load target/release/libreconcile.so, which `cargo test` alone does
# not produce, so the build comes first. --no-fail-fast runs every test binary, so that one
# failure does not hide the summaries of the others.
test: deps test-alerts
	$(CARGO) build --release --workspace --jobs $(JOBS)
	$(CARGO) test --release --workspace --jobs $(JOBS) --no-fail-fast

# Not part of `make test`: it runs the whole suite a second time, and fetching Valkey adds an
# apt source on a machine that lacks one.
test-valkey: deps
	$(CARGO) build --release --workspace --jobs $(JOBS)
	REDIS_SERVER="$$(scripts/valkey.sh)" \
		$(CARGO) test --release --workspace --jobs $(JOBS) --no-fail-fast

test-alerts:
	@scripts/deps.sh promtool
	promtool check rules deploy/prometheus/reconcile-alerts.yml
	cd deploy/prometheus && promtool test rules reconcile-alerts.test.yml

demo: deps
	$(CARGO) build --release --workspace --jobs $(JOBS)
	scripts/demo.sh

bench: deps
	@scripts/deps.sh valgrind
	$(CARGO) build --release --workspace --jobs $(JOBS)
	scripts/bench.sh

# Release profile, so that clippy reuses the build scripts `make build` already ran.
lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets --jobs $(JOBS) -- -D warnings

# Not part of `make test`: fuzzing needs nightly and runs for as long as it is given. The
# corpus grows in fuzz/corpus/<target> and a failing input lands in fuzz/artifacts/<target>.
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@for target in $$($(CARGO) +nightly fuzz list); do \
		echo "fuzzing $$target for $(FUZZ_SECONDS)s"; \
		$(CARGO) +nightly fuzz run $$target -- -max_total_time=$(FUZZ_SECONDS) \
			-print_final_stats=1 || exit 1; \
	done

clean:
	$(CARGO) clean
