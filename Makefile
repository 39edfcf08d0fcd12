# UpHub developer tasks. `make run` = the platform with a demo tenant, `make test` = what CI runs.

CARGO ?= cargo
CARGO_BUILD_JOBS ?= 2
export CARGO_BUILD_JOBS

.DEFAULT_GOAL := help
.PHONY: help run stop services test fmt fmt-check clippy cargo-test schema bench docker-test

help:
	@echo "make run      start services, build, migrate, seed demo, serve + worker (scripts/run.sh)"
	@echo "make stop     stop serve + worker started by make run"
	@echo "make test     services, fmt --check, clippy -D warnings, cargo test (what CI runs)"
	@echo "make schema   export the GraphQL SDL to schema.graphql"
	@echo "make bench    API benchmark (bench/api/run.sh)"
	@echo "make docker-test  build the image and run docker/compose.yml end to end (docker/test.sh)"
	@echo "make fmt      cargo fmt --all"

run:
	scripts/run.sh

stop:
	scripts/run.sh --stop

services:
	scripts/services-up.sh

# Sequential on purpose (also under make -j): services must be up before cargo test.
test:
	scripts/services-up.sh
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

cargo-test:
	$(CARGO) test --workspace

schema:
	$(CARGO) run -q -p uphub-api -- export-schema > schema.graphql.tmp || { rm -f schema.graphql.tmp; exit 1; }
	mv schema.graphql.tmp schema.graphql
	@echo "wrote schema.graphql"

bench:
	bench/api/run.sh

fmt:
	$(CARGO) fmt --all

docker-test:
	docker/test.sh
