# Two entry points for a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test browser bench-calibration clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch, pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test,baselines]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/converge demo

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

# The HTML report's test opens the page in headless Chromium: installed here where the machine allows
# (Debian, as root), else that one test is skipped with a message saying how to install it.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		{ apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 || \
		{ apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; }; }; } || \
		echo "chromium not installed: the HTML report's browser test will be skipped"

clean:
	rm -rf $(VENV) build src/*.egg-info
