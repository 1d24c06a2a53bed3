# Sedna developer commands. Every target works on a fresh machine: the first one that needs
# Python creates .venv and installs the project with its dev tools.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# tritonclient[grpc] needs protobuf < 7: it gets a venv of its own (tests/e2e/test_tritonclient.py).
TRITON_VENV := .venv-triton
TRITON_STAMP := $(TRITON_VENV)/.installed
# What `buf breaking` compares the protos against (a buf input, e.g. .git#branch=main).
BUF_AGAINST ?= .git\#branch=main
PYTEST_ARGS ?=

.PHONY: help install run test lint format typecheck layers proto proto-check crds crds-check buf check clean

help: ## Show the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(TRITON_STAMP): scripts/triton_venv.sh
	PYTHON=$(PYTHON) TRITON_VENV=$(TRITON_VENV) bash scripts/triton_venv.sh
	@touch $@

install: $(STAMP) $(TRITON_STAMP) ## Create .venv (Sedna, dev tools) and .venv-triton (tritonclient)

run: $(STAMP) ## The main job: validate the bundled example manifests offline
	$(BIN)/sedna validate -f examples/

test: $(STAMP) ## Run the whole test suite
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP) ## ruff lint + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## Apply ruff formatting and autofixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP) ## mypy --strict on the SDK, the services and the scripts
	$(BIN)/mypy sdk/sedna services/gm/sedna_gm services/lc/sedna_lc services/aggregator/sedna_aggregator services/kb/sedna_kb services/inference/sedna_inference scripts

layers: $(STAMP) ## Check the layering rules (services -> sdk, never service -> service)
	$(BIN)/lint-imports

proto: $(STAMP) ## Regenerate sdk/sedna/api from proto/
	$(BIN)/python scripts/gen_proto.py

proto-check: proto ## Fail when the committed generated code differs from proto/
	@if [ -n "$$(git status --porcelain -- sdk/sedna/api)" ]; then \
	  echo "sdk/sedna/api is out of date with proto/: run 'make proto' and commit" >&2; \
	  git status --porcelain -- sdk/sedna/api >&2; exit 1; fi

crds: $(STAMP) ## Regenerate crds/ (and the Helm chart's copy) from the resource models
	$(BIN)/python scripts/gen_crds.py
	$(BIN)/python scripts/gen_crds.py --out charts/sedna/crds

crds-check: crds ## Fail when the committed CRDs differ from the resource models
	@if [ -n "$$(git status --porcelain -- crds charts/sedna/crds)" ]; then \
	  echo "crds/ or charts/sedna/crds/ is out of date with sdk/sedna/resources: run 'make crds' and commit" >&2; \
	  git status --porcelain -- crds charts/sedna/crds >&2; exit 1; fi

buf: $(STAMP) ## buf format, lint and breaking-change check against $(BUF_AGAINST)
	$(BIN)/buf format --diff --exit-code
	$(BIN)/buf lint
	$(BIN)/buf breaking --against '$(BUF_AGAINST)'

check: lint typecheck layers buf proto-check crds-check ## Every static check CI runs

clean: ## Remove caches (keeps .venv)
	rm -rf .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist
