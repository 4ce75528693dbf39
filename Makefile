# certsync developer entry points. Every target installs what it needs into .venv first.
SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# `make demo` needs less: the CLI without the Azure SDK and the demo's two loopback servers (requirements-demo.txt).
DEMO_STAMP := $(VENV)/.installed-demo
# Azurite (the Storage emulator the integration tests start), pinned by tools/azurite/package-lock.json.
AZURITE := .tools/azurite/.installed
# Debian's Chromium, for the status page's browser test (a test tool's own browser download cannot work here).
CHROMIUM := /usr/bin/chromium

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml requirements.txt requirements-dev.txt
	@command -v openssl >/dev/null || { echo "installing openssl (the tests drive the real CLI)"; \
	  apt-get update -qq && apt-get install -y -qq openssl >/dev/null; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -e .
	@touch $@

$(DEMO_STAMP): pyproject.toml requirements-demo.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-demo.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

$(AZURITE): tools/azurite/package.json tools/azurite/package-lock.json scripts/install-azurite.sh
	bash scripts/install-azurite.sh

$(CHROMIUM):
	@echo "installing Debian's chromium (the status page is tested in headless Chromium)"
	@apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

demo: $(DEMO_STAMP)
	@PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

# ruff, mypy (strict on the X.509 core and validation), the wheel (.artifacts/dist: `pipx install` takes it;
# tests/test_distribution.py installs one in a clean venv), every test (tests/test_layers.py holds the dependency
# rule) with branch coverage, then the floor: 90% overall, 85% in every module (scripts/coverage_floor.py).
test: $(STAMP) $(AZURITE) $(CHROMIUM)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	@rm -rf .artifacts/coverage .artifacts/dist && mkdir -p .artifacts
	$(BIN)/python -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir .artifacts/dist .
	set -o pipefail; $(BIN)/python -m pytest --cov --cov-report= | tee .artifacts/pytest.log
	$(BIN)/python scripts/coverage_floor.py
	@tail -n 1 .artifacts/pytest.log  # pytest's closing line, last, for whoever reads the run's end

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP) $(AZURITE)
	$(BIN)/python bench/names.py
	$(BIN)/python bench/assess.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/keyvault_scale.py
	$(BIN)/python bench/history.py
	$(BIN)/python bench/status_page.py
	$(BIN)/python bench/storm.py

clean:
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache .hypothesis
