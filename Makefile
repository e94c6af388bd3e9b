# Coverwatch: `make run` serves on 127.0.0.1:8080 with a local PostgreSQL it
# provisions under .coverwatch/; `make test` runs every test against it.

CARGO ?= cargo
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
BIN := $(TARGET_DIR)/debug/coverwatch
PSQL_ADMIN = $(BIN) db up >/dev/null && psql -X -q -v ON_ERROR_STOP=1 "postgres://coverwatch@127.0.0.1:$${COVERWATCH_LOCAL_PORT:-54329}/postgres"

.PHONY: run test build bench bench-discovery bench-scan lint fmt db-up db-stop clean-test-dbs test-tools kafka-tools broker broker-release

# Test tools kept outside the clone so only a fresh machine pays for them:
# tansu (a Kafka-protocol broker, built from crates.io with SQLite and memory
# storage). The Python tools (tests/tools/requirements.txt: the official Kafka
# client, localstripe, the official Stripe library) go into a virtualenv.
CACHE := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/coverwatch
TANSU := $(CACHE)/tansu-0.6.0/bin/tansu
VENV := .coverwatch/venv

build:
	$(CARGO) build --workspace --bins --tests

run:
	$(CARGO) build --bin coverwatch
	$(BIN) serve

# The integration tests copy a migrated template database per test; old test
# databases are dropped first so the cluster does not grow without bound.
test: build clean-test-dbs test-tools
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi

clean-test-dbs:
	@$(PSQL_ADMIN) -t -A -c "SELECT 'DROP DATABASE IF EXISTS ' || quote_ident(datname) || ' WITH (FORCE);' FROM pg_database WHERE datname LIKE 'test\_%' OR datname = 'coverwatch_template'" | psql -X -q "postgres://coverwatch@127.0.0.1:$${COVERWATCH_LOCAL_PORT:-54329}/postgres" >/dev/null

test-tools: $(TANSU) $(VENV)/.requirements-installed

kafka-tools: test-tools

$(TANSU):
	$(CARGO) install tansu --version 0.6.0 --locked --debug --no-default-features \
		--features dynostore,libsql --root $(CACHE)/tansu-0.6.0

$(VENV)/.requirements-installed: tests/tools/requirements.txt
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r tests/tools/requirements.txt
	touch $@

# A broker for `make run` with Kafka: make broker, then
# COVERWATCH_KAFKA_BROKERS=127.0.0.1:19092 make run
broker: $(TANSU)
	mkdir -p .coverwatch/tansu && cd .coverwatch/tansu && $(TANSU) broker \
		--listener-url tcp://127.0.0.1:19092 --advertised-listener-url tcp://127.0.0.1:19092 \
		--storage-engine sqlite://tansu.db

# The same broker built in release mode (about 25 minutes, once), for
# `coverwatch bench-kafka`: a debug-built broker on the same two cores
# dominates the latency it measures.
TANSU_RELEASE := $(CACHE)/tansu-0.6.0-release/bin/tansu
$(TANSU_RELEASE):
	$(CARGO) install tansu --version 0.6.0 --locked --no-default-features \
		--features dynostore,libsql --root $(CACHE)/tansu-0.6.0-release

broker-release: $(TANSU_RELEASE)
	mkdir -p .coverwatch/tansu-memory && cd .coverwatch/tansu-memory && $(TANSU_RELEASE) broker \
		--listener-url tcp://127.0.0.1:19092 --advertised-listener-url tcp://127.0.0.1:19092 \
		--storage-engine memory://tansu/

bench:
	$(CARGO) build --release --bin coverwatch
	$(or $(CARGO_TARGET_DIR),target)/release/coverwatch bench

# The discovery benchmark: a 1,000-account, 30-OU organization in moto,
# Coverwatch's discovery beside a plain boto3 walk (needs `make test-tools`).
bench-discovery: test-tools
	$(CARGO) build --release --bin coverwatch
	.coverwatch/venv/bin/python tests/tools/bench_discovery.py \
		--coverwatch $(or $(CARGO_TARGET_DIR),target)/release/coverwatch

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

db-up:
	$(CARGO) run -q --bin coverwatch -- db up

db-stop:
	$(CARGO) run -q --bin coverwatch -- db stop

# The scanning benchmark: 1,000 accounts over 4 regions in moto behind the
# fault proxy, Coverwatch's scan with worker processes beside a plain boto3
# scan making the same calls (about 50 minutes; needs `make test-tools`).
bench-scan: test-tools
	$(CARGO) build --release --bin coverwatch
	.coverwatch/venv/bin/python tests/tools/bench_scan.py $(if $(SAMPLE),--sample-only) \
		--coverwatch $(or $(CARGO_TARGET_DIR),target)/release/coverwatch
