# The two set-up commands of README.md: `make demo` and `make test`.
# Each installs what it needs the first time: uv, the virtualenv, the Kafka jars.

SHELL := /bin/bash
UV_VERSION := 0.13.9
CACHE := $(or $(OMNISTITCH_CACHE_DIR),$(HOME)/.cache/omnistitch)
UV := $(CACHE)/uv-$(UV_VERSION)/bin/uv
VENV := .venv
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))

.PHONY: demo test lint setup kafka-jars system-deps clean

demo: setup kafka-jars
	$(VENV)/bin/omnistitch demo

test: setup kafka-jars system-deps lint
	$(VENV)/bin/pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/omnistitch schemas export --check

setup: $(VENV)/.synced

# uv itself comes from PyPI into a private virtualenv; the project's packages are pinned
# by uv.lock (--frozen: an out-of-date lock fails instead of silently re-resolving).
$(UV):
	python3 -m venv $(CACHE)/uv-$(UV_VERSION)
	$(CACHE)/uv-$(UV_VERSION)/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --extra dev
	touch $@

kafka-jars:
	deploy/local/kafka.sh fetch >/dev/null

# Real clients the tests drive, from the distribution's packages: promtool (alert-rule
# tests) and the Prometheus server (the scrape test), kcat (a non-Python reader of
# customer.context) and Chromium (the agent desktop page, driven by playwright). Needs root
# (or sudo) the first time, a no-op afterwards.
SYSTEM_TOOLS := promtool:prometheus prometheus:prometheus kcat:kcat chromium:chromium
system-deps:
	@missing=$$(for t in $(SYSTEM_TOOLS); do command -v $${t%%:*} >/dev/null || echo $${t#*:}; done \
	  | sort -u | tr '\n' ' '); \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends $$missing; \
	fi

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
