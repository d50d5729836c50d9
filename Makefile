# Entry points a newcomer needs; README.md explains each.
.PHONY: deps run test test-rust test-clients test-deploy lint bench bench-cost

# Installs protoc, redis-server/redis-cli, grpcurl, iptables, openssl, prometheus, shellcheck and the clients' toolchains when missing.
deps:
	@scripts/install-deps.sh
	@scripts/clients-deps.sh

# Serves on localhost:50051, starting a local Redis when none answers on 6379.
# Needs only the service's own tools, not the clients' (their venv takes a minute).
run:
	@scripts/install-deps.sh
	@scripts/run.sh

# The whole test suite: unit and integration tests against real redis-server
# processes and the real grpcurl, the clients, then the Docker deploy test
# (which fails, saying how to get one, where no Docker engine answers).
test: deps test-rust test-clients test-deploy

test-rust:
	cargo test --locked --all-targets

test-clients:
	scripts/clients-test.sh

test-deploy:
	@deploy/test.sh

# Formatting, lints and shell checks; CI runs these before the tests.
lint: deps
	cargo fmt --all -- --check
	cargo clippy --locked --all-targets -- -D warnings
	scripts/proto-check.sh
	promtool check rules deploy/prometheus/alerts.yaml
	shellcheck scripts/*.sh .ci/run clients/python/generate.sh $(wildcard deploy/*.sh deploy/*/*.sh)

# Service vs redis-benchmark at 1, 32 and 128 callers, plus cluster rows, then the WatchUsers rows (see bench/RESULTS.md).
# Needs only the service's own tools, not the clients' (their venv takes a minute).
bench:
	@scripts/install-deps.sh
	@command -v h2load >/dev/null || { apt-get update -qq && apt-get install -y -qq nghttp2-client >/dev/null; }
	python3 bench/bench.py
	bench/watch.sh

# The cost gate: instructions per GetUser and CreateUser of the release service,
# counted by callgrind (stable where wall-clock rates drift 2x), checked against
# bench/baseline.json; fails when one grows more than 10% (see bench/RESULTS.md).
bench-cost:
	@scripts/install-deps.sh
	python3 bench/cost.py --check
