# certsync developer entry points. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
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

$(AZURITE): tools/azurite/package.json tools/azurite/package-lock.json scripts/install-azurite.sh
	bash scripts/install-azurite.sh

$(CHROMIUM):
	@echo "installing Debian's chromium (the status page is tested in headless Chromium)"
	@apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

demo: $(STAMP) $(AZURITE)
	@PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

test: $(STAMP) $(AZURITE) $(CHROMIUM)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/names.py
	$(BIN)/python bench/assess.py
	$(BIN)/python bench/pipeline.py

clean:
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache .hypothesis
