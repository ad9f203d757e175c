# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-install
OUT ?= demo_out
export HF_HUB_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: install demo test test-slow test-all bench docs clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	@fc-list 2>/dev/null | grep -qi "wqy-microhei" || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    (apt-get install -y -q fonts-wqy-microhei >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q fonts-wqy-microhei >/dev/null 2>&1)) || \
	    echo "could not install fonts-wqy-microhei: Chinese text rendering needs it"; \
	  else echo "install the Debian package fonts-wqy-microhei (a CJK font): Chinese text rendering needs it"; fi; }
	@$(BIN)/python -m mining.models.mediapipe fetch || \
	  echo "MediaPipe person models not fetched: person masks and pose maps report them absent (retry: $(BIN)/python -m mining.models.mediapipe fetch)"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/aceforge demo --out $(OUT)

# the default (CI): every test but the slow end-to-end ones marked `slow`; test-slow runs those, test-all both
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not gpu and not slow"

# Debian's Chromium for the browser tests of the slow suite (Playwright drives it; it downloads no browser)
browser:
	@command -v chromium >/dev/null || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; \
	  else echo "install the Debian packages chromium and chromium-driver: the browser tests need them"; exit 1; fi; }

test-slow: $(STAMP) browser
	$(BIN)/python -m pytest -q -m "slow and not gpu"

test-all: $(STAMP) browser
	$(BIN)/python -m pytest -q -m "not gpu"

# the documentation site under site/ (configuration and layout references generated from the code)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(STAMP)
	$(BIN)/python bench/ingest_throughput.py
	$(BIN)/python bench/shard_write.py

clean:
	rm -rf $(OUT) .pytest_cache site
