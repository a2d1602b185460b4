# Nexus developer commands. Everything runs from the repo's own virtualenv in .venv/.
#   make up     start etcd + every service locally (Ctrl-C stops them all)
#   make test   bootstrap, lint, type-check and run every test suite
#   make compose-test   build the images and run docker compose for real (root; CI runs it)

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
UV     := $(VENV)/bin/uv
UV_VERSION := 0.13.8
STAMP  := $(VENV)/.synced
EXTRAS := $(VENV)/.extras
SERVICES := $(patsubst services/%/pyproject.toml,%,$(wildcard services/*/pyproject.toml))

.PHONY: bootstrap extras up test test-only compose-test lint typecheck requirements bench chaos clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) uv.lock pyproject.toml libs/pyproject.toml $(wildcard services/*/pyproject.toml)
	$(PY) -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	# --inexact keeps the optional torch/diffusers extra that pip installs (see `extras`)
	$(UV) sync --frozen --all-packages --inexact
	touch $@

bootstrap: $(STAMP)

# Optional heavy extra the test suites exercise for real: torch (CPU) + diffusers for images.
# (pip, not uv: uv would resolve the multi-GB CUDA torch; see docs/adr/0001.)
# services/tts/requirements-pocket-tts.txt is NOT installed: its weights can't be fetched here.
$(EXTRAS): $(STAMP) services/images/requirements-diffusers.txt
	$(PY) -m pip install -q --disable-pip-version-check -r services/images/requirements-diffusers.txt
	touch $@

extras: $(EXTRAS)

up: bootstrap
	$(VENV)/bin/nexus up

lint: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

typecheck: bootstrap
	cd libs && ../$(VENV)/bin/mypy nexus_kit nexus_cli nexus_testing tests
	$(VENV)/bin/mypy tests scripts bench
	for s in $(SERVICES); do (cd services/$$s && ../../$(VENV)/bin/mypy app tests) || exit 1; done

test: bootstrap extras lint typecheck
	$(PY) scripts/test_all.py

# Docker Compose built and run for real: dockerd only inside a network namespace of its own,
# offline (local base images and package index). Skips without root/apt/netns unless CI=true.
compose-test: bootstrap
	$(PY) scripts/compose_test.py

# Run a subset: make test-only SUITES="services/gateway libs"
test-only: bootstrap
	$(PY) scripts/test_all.py $(SUITES)

# Regenerate each service's requirements.txt (its container's pins) from uv.lock.
requirements: bootstrap
	for s in $(SERVICES); do \
		$(UV) export --frozen --package nexus-$$s --no-hashes --no-dev --no-emit-workspace \
			--output-file services/$$s/requirements.txt -q || exit 1; done

# Break a local stack under load (etcd killed and frozen, replicas restarted and killed, auth
# down, gateway SIGTERM with streams, bad inputs) and print the table README's Reliability
# section shows. Bounded; loopback only. `make test` runs the --quick version.
chaos: bootstrap
	$(PY) scripts/chaos.py

bench: bootstrap
	$(PY) bench/run.py --budget 300
	$(PY) bench/scale.py
	$(PY) bench/usage.py

clean:
	rm -rf $(VENV) .nexus .mypy_cache .ruff_cache
