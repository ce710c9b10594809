# Developer and CI entry points for the restorekeeper.postgresql collection.
# `make test` runs everything CI runs, in the same order; it needs root, and
# first installs (Debian, as root) or lists the host packages it needs
# (`make prerequisites`, tools/prerequisites.py). The other targets work as
# root and as a normal user; they need GNU make, bash, git and a Python 3.11
# with venv.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# The venv's interpreter must be world-readable/executable: the `postgres` OS
# user runs archive commands and test helpers with it, and pyenv shims under
# /root are not reachable for that user. Debian's /usr/bin/python3 is.
PYTHON ?= $(if $(wildcard /usr/bin/python3),/usr/bin/python3,python3)

VENV        := .venv
# Where the venv really lives: .venv itself, or, as root in a checkout other
# users cannot traverse (a home of mode 0700), a world-readable directory
# outside it keyed by the checkout path, which .venv links to: the `postgres`
# user runs the venv's python. Recipes use this real path, so scripts'
# shebangs and sys.executable never lead through the private directory.
VENV_HOME   := $(or $(shell $(PYTHON) tools/prerequisites.py --venv-home $(CURDIR)),$(CURDIR)/$(VENV))
VENV_BIN    := $(VENV_HOME)/bin
STAMP       := $(VENV_HOME)/.requirements.stamp
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
lint units integration molecule demo bench bench-large: export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)

.PHONY: help prerequisites venv collection lint sanity units integration molecule test demo demo-clean bench bench-large clean distclean

help:
	@echo "Targets: prerequisites venv collection lint sanity units integration molecule test demo demo-clean bench bench-large clean distclean"

## prerequisites: the host packages make test needs (sshd, sudo, ip, PostgreSQL 15 and
## postgresql-common, python3-venv, the host Python's psycopg2, zstandard, crc32c,
## cryptography, boto3). As root on Debian installs what is missing; otherwise stops
## with one message listing all of it. One dpkg-query when nothing is missing.
prerequisites:
	@$(PYTHON) tools/prerequisites.py

## venv: .venv with the pinned development toolchain (requirements-dev.txt, which includes the
## runtime requirements.txt); reinstalls only when either file changes.
## In a private checkout as root, .venv is a link to $(VENV_HOME) (see above).
venv: $(STAMP)
	@if [ "$(VENV_HOME)" != "$(CURDIR)/$(VENV)" ] && [ "$$(readlink $(VENV) 2>/dev/null)" != "$(VENV_HOME)" ]; then \
	  echo "venv: other users cannot traverse $(CURDIR), yet the postgres user runs the venv's python:"; \
	  echo "venv: it lives in $(VENV_HOME) and $(VENV) links to it (make distclean removes both)"; \
	  rm -rf $(VENV); ln -s $(VENV_HOME) $(VENV); \
	fi

$(STAMP): requirements.txt requirements-dev.txt
	@umask 022; \
	if [ "$(VENV_HOME)" = "$(CURDIR)/$(VENV)" ] && [ -L $(VENV) ]; then rm -f $(VENV); fi; \
	if [ ! -x $(VENV_BIN)/python ] || [ ! -x $(VENV_BIN)/pip ]; then \
	  rm -rf $(VENV_HOME); \
	  mkdir -p -m 0755 $(dir $(VENV_HOME)); \
	  echo "venv: creating $(VENV_HOME) with $(PYTHON)"; \
	  if ! $(PYTHON) -m venv $(VENV_HOME); then \
	    rm -rf $(VENV_HOME); \
	    echo "venv: '$(PYTHON) -m venv' failed (ensurepip missing?); or run make PYTHON=/path/to/python3.11" >&2; \
	    $(PYTHON) tools/prerequisites.py python3-venv; \
	    $(PYTHON) -m venv $(VENV_HOME); \
	  fi; \
	fi
	umask 022; $(VENV_BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt -r requirements-dev.txt
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

## units: the unit tests, as on a host without psycopg2 and without a server. PYTHONPATH puts
## tools/without_psycopg2 first: its psycopg2.py raises ImportError, so a unit test (or an engine
## file it imports) that needs psycopg2 fails to collect here; tests/unit/tools/test_without_psycopg2.py
## checks the same when the unit tests run by hand. PostgreSQL clusters and the installed tool are
## fixtures of tests/integration/conftest.py only, so no unit test can ask for a server.
units: export PYTHONPATH := $(CURDIR)/tools/without_psycopg2$(if $(PYTHONPATH),:$(PYTHONPATH))
units: venv collection
	$(call run_pytest,tests/unit)

integration: venv collection
	$(call run_pytest,tests/integration,$(if $(filter 0,$(INTEGRATION_WORKERS)),,-n $(INTEGRATION_WORKERS) --dist loadfile))

## molecule: scenario default (one host: archiving, backups, a mistake rewound by
## pitr, a drill), then fleet (four network-namespace hosts over SSH: site.yml
## with mixed tiers, a fleet drill, a lost host rebuilt from its copies; needs
## root, iproute2, openssh-server). MOLECULE_SCENARIOS="fleet" runs one.
MOLECULE_SCENARIOS ?= default debian fleet

molecule: venv collection
	@for scenario in $(MOLECULE_SCENARIOS); do \
	  if [ ! -d molecule/$$scenario ]; then echo "molecule: no molecule/$$scenario scenario; skipping"; continue; fi; \
	  echo "$(VENV_BIN)/molecule test -s $$scenario"; \
	  start=$$(date +%s); \
	  $(VENV_BIN)/molecule test -s $$scenario || exit 1; \
	  echo "molecule: scenario $$scenario passed in $$(( $$(date +%s) - start )) s"; \
	done

## test: everything CI runs, in order; the first failing step fails make.
## Molecule's default and debian scenarios run beside the integration tests
## (alone they leave about 40% of the CPU idle, waiting on servers and on
## Ansible); their output follows the tests', and any failing fails make. Then fleet.
MOLECULE_BESIDE_LOG := $(CURDIR)/.build/molecule-beside.log

# Under make test (and so in CI) a test that would skip for a missing
# prerequisite (sshd, root, PostgreSQL 15...) fails instead (tests/integration/conftest.py).
test: export RESTOREKEEPER_REQUIRE_ALL := 1
test:
	$(MAKE) --no-print-directory prerequisites
	$(MAKE) --no-print-directory venv
	$(MAKE) --no-print-directory collection
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory sanity
	$(MAKE) --no-print-directory units
	@echo "== integration, with molecule default and debian beside it (their log: $(MOLECULE_BESIDE_LOG))"
	@$(MAKE) --no-print-directory molecule MOLECULE_SCENARIOS="default debian" >$(MOLECULE_BESIDE_LOG) 2>&1 & beside=$$!; \
	integration=0; $(MAKE) --no-print-directory integration || integration=$$?; \
	molecule=0; wait $$beside || molecule=$$?; \
	echo "== molecule default and debian (ran beside the integration tests; exit $$molecule)"; cat $(MOLECULE_BESIDE_LOG); \
	[ $$integration -eq 0 ] && [ $$molecule -eq 0 ]
	$(MAKE) --no-print-directory molecule MOLECULE_SCENARIOS=fleet

## demo: archiving, backups, a rewind, a drill and 3-2-1 copies on a throwaway PostgreSQL 18; the drill's
## reports go to .build/demo/reports (fresh each run). KEEP=1 leaves the servers running and prints how to
## explore them; `make demo-clean` (or `make clean`) stops and removes them.
KEEP ?=
demo: venv collection
	@if [ -f tools/demo.py ]; then $(VENV_BIN)/python tools/demo.py $(if $(filter-out 0,$(KEEP)),--keep); else echo "demo: tools/demo.py not written yet"; fi

demo-clean:
	@if [ -f .build/demo/stop-demo.sh ]; then sh .build/demo/stop-demo.sh; else echo "demo-clean: no demo kept running"; fi

bench: venv collection
	$(VENV_BIN)/python -m pip install --disable-pip-version-check -q -r bench/requirements.txt
	$(VENV_BIN)/python bench/run.py $(BENCH_ARGS)

# The large profile of issue 16 (>= 4 GiB, S3 on moto over HTTPS): about an hour on 2 cores; see bench/README.md.
bench-large: venv collection
	$(VENV_BIN)/python -m pip install --disable-pip-version-check -q -r bench/requirements.txt
	$(VENV_BIN)/python bench/run.py --profile large $(BENCH_ARGS)

## clean: build output (the demo's reports too, after stopping a kept demo) and caches (keeps .venv;
## `make distclean` removes it too).
clean:
	@if [ -f .build/demo/stop-demo.sh ]; then sh .build/demo/stop-demo.sh; fi
	rm -rf .build tests/output .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	@if [ -L $(VENV) ]; then echo "rm -rf $$(readlink $(VENV))"; rm -rf "$$(readlink $(VENV))"; fi
	rm -rf $(VENV)
