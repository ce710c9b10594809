# Developer and CI entry points for the restorekeeper.postgresql collection.
# `make test` runs everything CI runs, in the same order. Works as root and as
# a normal user; needs GNU make, bash, git and a Python 3.11 with venv.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# The venv's interpreter must be world-readable/executable: the `postgres` OS
# user runs archive commands and test helpers with it, and pyenv shims under
# /root are not reachable for that user. Debian's /usr/bin/python3 is.
PYTHON ?= $(if $(wildcard /usr/bin/python3),/usr/bin/python3,python3)

VENV        := .venv
VENV_BIN    := $(CURDIR)/$(VENV)/bin
STAMP       := $(VENV)/.requirements.stamp
COLLECTIONS := $(CURDIR)/.build/collections
COLLECTION_LINK := $(COLLECTIONS)/ansible_collections/restorekeeper/postgresql

# Extra arguments, e.g. `make sanity SANITY_ARGS="--test pep8"` or `make units PYTEST_ARGS="-k push"`.
SANITY_ARGS ?=
PYTEST_ARGS ?=
# Integration test files run in parallel workers: most of their time is spent
# waiting on servers (start, fsync, replay), so more workers than cores pay
# off. INTEGRATION_WORKERS=0 runs them in this process, one after another.
INTEGRATION_WORKERS ?= 3
LINT_ARGS   ?=

# Every recipe finds the venv's executables first; ansible-lint never fetches
# schemas on its own (we are offline apart from package registries).
export ANSIBLE_LINT_SKIP_SCHEMA_UPDATE := 1
export PATH := $(VENV_BIN):$(PATH)

# Lint, tests, molecule, demo and bench load restorekeeper.postgresql through
# the .build/collections symlink, never a copy installed elsewhere (an older
# copy in ~/.ansible/collections would otherwise shadow the work tree). Not
# sanity: it must see its own copy of the collection.
lint units integration molecule demo bench: export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)

.PHONY: help venv collection lint sanity units integration molecule test demo bench clean distclean

help:
	@echo "Targets: venv collection lint sanity units integration molecule test demo bench clean distclean"

## venv: .venv with the pinned toolchain; reinstalls only when requirements.txt changes.
venv: $(STAMP)

$(STAMP): requirements.txt
	@if [ ! -x $(VENV)/bin/python ] || [ ! -x $(VENV)/bin/pip ]; then \
	  rm -rf $(VENV); \
	  echo "venv: creating $(VENV) with $(PYTHON)"; \
	  if ! $(PYTHON) -m venv $(VENV); then \
	    rm -rf $(VENV); \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      echo "venv: ensurepip missing; installing Debian's python3-venv"; \
	      apt-get update -qq; \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; \
	      $(PYTHON) -m venv $(VENV); \
	    else \
	      echo "venv: ERROR: '$(PYTHON) -m venv' failed (ensurepip missing?). HINT: install your distribution's venv package, e.g. 'sudo apt-get install python3-venv', or run make PYTHON=/path/to/python3.11" >&2; \
	      exit 1; \
	    fi; \
	  fi; \
	fi
	$(VENV)/bin/python -m pip install --disable-pip-version-check -q -r requirements.txt
	@touch $(STAMP)

## collection: .build/collections/ansible_collections/restorekeeper/postgresql -> repository root.
## A link already right is left alone: make test runs two targets at once that both need it.
collection:
	@if [ -e $(COLLECTION_LINK) ] && [ ! -L $(COLLECTION_LINK) ]; then \
	  echo "collection: ERROR: $(COLLECTION_LINK) exists and is not a symlink. HINT: make clean" >&2; exit 1; \
	fi
	@mkdir -p $(dir $(COLLECTION_LINK))
	@[ "$$(readlink $(COLLECTION_LINK) 2>/dev/null)" = ../../../.. ] || ln -sfn ../../../.. $(COLLECTION_LINK)
	@echo "collection: $(COLLECTION_LINK) -> $(CURDIR)"

## lint: ansible-lint, production profile, offline.
lint: venv collection
	$(VENV_BIN)/ansible-lint --offline --profile production $(LINT_ARGS)

## sanity: ansible-test sanity on a real copy under .build/sanity (see tools/run_sanity.py).
sanity: venv
	$(VENV_BIN)/python tools/run_sanity.py $(SANITY_ARGS)

# Runs pytest on a directory (with extra arguments), or says so when it holds no tests yet (pytest
# would exit 5 and fail the build for an empty directory).
define run_pytest
	@if [ -n "$$(find $(1) \( -name 'test_*.py' -o -name '*_test.py' \) -print -quit 2>/dev/null)" ]; then \
	  echo "$(VENV_BIN)/pytest $(1) $(2) $(PYTEST_ARGS)"; \
	  $(VENV_BIN)/pytest $(1) $(2) $(PYTEST_ARGS); \
	else \
	  echo "$@: no tests under $(1) yet; skipping"; \
	fi
endef

units: venv collection
	$(call run_pytest,tests/unit)

integration: venv collection
	$(call run_pytest,tests/integration,$(if $(filter 0,$(INTEGRATION_WORKERS)),,-n $(INTEGRATION_WORKERS) --dist loadfile))

## molecule: scenario default (one host: archiving, backups, a mistake rewound by
## pitr, a drill), then fleet (four network-namespace hosts over SSH: site.yml
## with mixed tiers, a fleet drill, a lost host rebuilt from its copies; needs
## root, iproute2, openssh-server). MOLECULE_SCENARIOS="fleet" runs one.
MOLECULE_SCENARIOS ?= default fleet

molecule: venv collection
	@for scenario in $(MOLECULE_SCENARIOS); do \
	  if [ ! -d molecule/$$scenario ]; then echo "molecule: no molecule/$$scenario scenario; skipping"; continue; fi; \
	  echo "$(VENV_BIN)/molecule test -s $$scenario"; \
	  start=$$(date +%s); \
	  $(VENV_BIN)/molecule test -s $$scenario || exit 1; \
	  echo "molecule: scenario $$scenario passed in $$(( $$(date +%s) - start )) s"; \
	done

## test: everything CI runs, in order; the first failing step fails make.
## Molecule's default scenario runs beside the integration tests (alone it
## leaves about 40% of the CPU idle, waiting on its server and on Ansible);
## its output follows theirs, and either failing fails make. Then fleet.
MOLECULE_BESIDE_LOG := $(CURDIR)/.build/molecule-default.log

test:
	$(MAKE) --no-print-directory venv
	$(MAKE) --no-print-directory collection
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory sanity
	$(MAKE) --no-print-directory units
	@echo "== integration, with molecule default beside it (its log: $(MOLECULE_BESIDE_LOG))"
	@$(MAKE) --no-print-directory molecule MOLECULE_SCENARIOS=default >$(MOLECULE_BESIDE_LOG) 2>&1 & beside=$$!; \
	integration=0; $(MAKE) --no-print-directory integration || integration=$$?; \
	molecule=0; wait $$beside || molecule=$$?; \
	echo "== molecule default (ran beside the integration tests; exit $$molecule)"; cat $(MOLECULE_BESIDE_LOG); \
	[ $$integration -eq 0 ] && [ $$molecule -eq 0 ]
	$(MAKE) --no-print-directory molecule MOLECULE_SCENARIOS=fleet

demo: venv collection
	@if [ -f tools/demo.py ]; then $(VENV_BIN)/python tools/demo.py; else echo "demo: tools/demo.py not written yet"; fi

bench: venv collection
	$(VENV_BIN)/python -m pip install --disable-pip-version-check -q -r bench/requirements.txt
	$(VENV_BIN)/python bench/run.py $(BENCH_ARGS)

## clean: build output and caches (keeps .venv; `make distclean` removes it too).
clean:
	rm -rf .build tests/output .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
