# One entry point. `make book` and `make test` create the environment themselves (.venv).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PROFILE ?= offline
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: env book notebooks html lab test browser-deps bench clean-book

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[book,dev]"
	rm -f $(VENV)/.installed-* && touch $@

## book: run every notebook with papermill for PROFILE (default offline), then build the HTML (warnings are errors)
book: notebooks html

notebooks: $(STAMP)
	$(PY) -m diffpath_core.book --profile $(PROFILE) $(if $(SET),--set $(SET))

html: $(STAMP)
	$(VENV)/bin/jupyter-book build . --warningiserror --keep-going --quiet

## lab: JupyterLab on notebooks/ with the project's environment (run the notebooks by hand; classroom)
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

## test: the whole test suite on CPU (installs Chromium and its driver for the browser check where missing)
test: $(STAMP) browser-deps
	$(PY) -m pytest -q --durations=12

browser-deps:
	@{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "chromium or chromedriver missing: install Debian's chromium and chromium-driver packages for the browser test"; fi; }

## bench: throughput, overhead and density-fit figures (prints, never asserts)
bench: $(STAMP)
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/density_fit.py

clean-book:
	rm -rf _build book/generated results/$(PROFILE)
