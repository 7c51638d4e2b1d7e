# The two commands the README leads with:
#   make demo   set up, build the default plugin and run the demo
#   make test   set up and run every check and test (what CI runs, via .ci/run)
# Both work on a fresh machine that has only the Rust toolchain (rustup), gcc and make.

CARGO ?= cargo
PLUGIN_TARGET_DIR := target/plugins
PLUGIN_OUT := $(PLUGIN_TARGET_DIR)/wasm32-wasip2/release

.PHONY: setup setup-cargo-component setup-kafka setup-peers plugins demo test lint validate-deploy supply-chain bench chaos

# Everything a fresh machine lacks. Idempotent and quick when already done.
# Debian packages: kcat, a Kafka client that is not ours, which the tests use on both ends;
# kubectl, which runs deploy/plugins/update-plugins.sh in the tests (client-side dry run, no
# cluster); libssl-dev and pkg-config, for librdkafka's TLS and SCRAM support;
# python3-confluent-kafka, the Python fanout the pipeline benchmark compares against.
# And Go (golang-go, unless a `go` is already on PATH): tests/integration/poison.rs runs Go's
# encoding/json, EventRouter's own parser, over the envelope fixtures (standard library only).
DEBIAN_PACKAGES := kcat kubectl libssl-dev pkg-config python3-confluent-kafka
setup:
	rustup target add wasm32-wasip2
	rustup component add rustfmt clippy
	missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	command -v go >/dev/null 2>&1 || missing="$$missing golang-go"; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

# cargo-component: the second way users build plugins (`cargo component build`), which the
# tests exercise; it builds for wasm32-wasip1 and adapts the module to a component. Installing
# it compiles it (7-10 minutes on 2 cores), once, so only `make test` asks for it, not the demo.
CARGO_COMPONENT_VERSION := 0.21.1
setup-cargo-component: setup
	rustup target add wasm32-wasip1
	cargo-component --version 2>/dev/null | grep -qx "cargo-component $(CARGO_COMPONENT_VERSION)" \
		|| $(CARGO) install cargo-component --locked --version $(CARGO_COMPONENT_VERSION)

# Apache Kafka's jars from Maven Central, for the tests that need a real cluster
# (tests/kafka-cluster): once, into ~/.cache/fanout/kafka-VERSION (about 10 s; Java 17 and Maven).
setup-kafka:
	.ci/setup-kafka

# The pipeline benchmark's peers (benches/peers/), built outside the work tree's sources:
# the Go fanout on franz-go into target/peers/go-franz (Go's caches under ~/.cache/fanout/go).
setup-peers: setup
	.ci/setup-peers

# The example plugins, built the way users build theirs.
plugins: setup
	$(CARGO) build --release --target wasm32-wasip2 -p by-namespace -p alerts -p archive --target-dir $(PLUGIN_TARGET_DIR)

# The real pipeline on an embedded Kafka (librdkafka's mock cluster): the repo's EventRouter
# fixtures plus generated events, routed by the default plugin, with live counts.
# More: `target/release/fanout demo --help` (events, rate, keep-running, compare-native).
DEMO_ARGS ?= --events 50000
demo: plugins
	$(CARGO) build --release -p fanout
	target/release/fanout demo --plugins $(PLUGIN_OUT)/by_namespace.wasm $(DEMO_ARGS)

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Every manifest under deploy/, offline: kubernetes-validate (PyPI, in a cached virtualenv) for
# the core kinds, a structural check for Strimzi's and the ServiceMonitor, and the Dockerfile's
# build steps against this Makefile's.
validate-deploy:
	.ci/validate-deploy

# cargo-deny (installed once, about 2.5 minutes): licences, bans and sources of the whole
# dependency tree against deny.toml. Advisories need a local copy of the RustSec database
# (FANOUT_ADVISORY_DB=DIR), since CI can't reach its git host; see .ci/deny.
supply-chain:
	.ci/deny

# The pipeline benchmark's CI settings (20k events, every contender, every record checked) run
# under `cargo test`, which builds them without `--bench`: the embedded-broker lane (pipeline)
# and the Apache Kafka lane (drain, which needs the Go peer from setup-peers). The chaos run's CI setting is one of the
# tests `cargo test --workspace` runs: on the mock cluster (50k events), then on a real 3-node
# Apache Kafka at least once (20k events); tests/chaos/main.rs says why exactly-once is not in
# CI yet.
test: lint validate-deploy supply-chain setup-cargo-component setup-kafka setup-peers
	$(CARGO) test --workspace
	$(CARGO) test -p fanout --bench pipeline
	$(CARGO) test -p fanout --bench drain

# The chaos run's full setting, in a release build: 1M events and 100 plugin swaps, three times
# (the feed alone takes about 10 minutes a run, at 1,700 events/s): on the mock cluster at least
# once, then on a real 3-node Apache Kafka (partition leaders SIGKILLed instead of the mock's
# outages and injected errors) at least once and exactly once (which librdkafka 2.12 can still
# fail: tests/chaos/main.rs). The reports are written to
# target/chaos/<cluster>-<delivery>/report.*. FANOUT_CHAOS_SEED=N replays a run's plan;
# FANOUT_CHAOS_KAFKA=mock|apache and FANOUT_CHAOS_DELIVERY=at-least-once|exactly-once pick one run
# (exactly-once needs the real cluster: on the mock it stops at once and says why).
chaos: setup setup-kafka
	FANOUT_CHAOS=full $(CARGO) test --release -p fanout --test chaos

bench: plugins setup-kafka setup-peers
	$(CARGO) bench -p fanout --bench route
	$(CARGO) bench -p fanout --bench reload
	$(CARGO) bench -p fanout --bench pipeline
	$(CARGO) bench -p fanout --bench drain
