# Two targets do all the set-up on a fresh machine (see README "Quick start"):
#   make demo  -> create .venv, install milkit, run recipes/histgen_report.toml on the demo cohort
#   make test  -> create .venv, install milkit + test deps + the example plugin, run the whole suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RECIPE ?= recipes/histgen_report.toml

$(BIN)/.installed: pyproject.toml constraints.txt plugins/milkit-dsmil/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt torch
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[all,test]"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt ./plugins/milkit-dsmil
	$(BIN)/python -c "import torch; assert torch.__version__.startswith('2.13'), torch.__version__"
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/milkit run $(RECIPE)

test: $(BIN)/.installed
	@# headless Chromium for the report.html browser test (best effort; the test skips without it)
	-@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1)); } || true
	$(BIN)/python -m pytest -q

.PHONY: install demo test
