# The two commands a newcomer needs: `make demo` and `make test`.
# Both install what they need (Debian's docker-registry, a venv with the project).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all system-deps install lint check test demo bench dist clean

all: test

# Debian's docker-registry (distribution 2.8.2) is the real registry the tests run.
# skopeo, umoci and buildah are the real clients of tests/integration/test_real_clients.py
# (buildah as root with the vfs driver: no daemon, nothing run in a container).
# chromium renders the usage page in tests/browser (headless).
system-deps:
	@if [ ! -x /usr/bin/docker-registry ] || [ ! -x /usr/bin/prometheus-pushgateway ] || \
		[ ! -x /usr/bin/skopeo ] || [ ! -x /usr/bin/umoci ] || [ ! -x /usr/bin/buildah ] || \
		[ ! -x /usr/bin/chromium ] || \
		! $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			docker-registry prometheus-pushgateway python3-venv python3-pip \
			skopeo umoci buildah chromium >/dev/null; \
	fi
	@/usr/bin/docker-registry --version
	@/usr/bin/skopeo --version && /usr/bin/umoci --version && /usr/bin/buildah --version

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: system-deps $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The fast lane: no registry, no S3, no browser (tests marked integration or slow are
# left out; tests/conftest.py marks them). Under 2 minutes.
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider -m "not integration and not slow"

# Two workers (pytest-xdist): most tests wait on a registry, moto or a stall, so two
# processes on these 2-core machines halve the wall time (448 s -> 178 s measured on
# the S3 and fault tests).
test: lint
	$(BIN)/pytest -q -p no:cacheprovider -n 2

# A wheel and an sdist, byte-identical for one commit, checked by twine.
dist: $(STAMP)
	$(BIN)/python -m tools.dist dist

demo: install
	$(BIN)/python -m demo

# Every figure in docs/benchmarks.md: the API path against the registry's DELETE floor,
# direct removal, blob collection and retention planning.
bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)
	$(BIN)/python -m bench.direct
	$(BIN)/python -m bench.gc
	$(BIN)/python -m bench.retention
	$(BIN)/python -m bench.events
	$(BIN)/python -m bench.usage
	$(BIN)/python -m bench.scale cpu
	$(BIN)/python -m bench.scale cpu botocore
	$(BIN)/python -m bench.scale cpu tls registry-keys
	$(BIN)/python -m bench.scale estimate
	$(BIN)/python -m bench.scale target
	$(BIN)/python -m bench.scale

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
