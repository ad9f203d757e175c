# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-install
OUT ?= demo_out
export HF_HUB_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: install demo test test-slow test-all bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/aceforge demo --out $(OUT)

# the default (CI): every test but the slow end-to-end ones marked `slow`; test-slow runs those, test-all both
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not gpu and not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow and not gpu"

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "not gpu"

bench: $(STAMP)
	$(BIN)/python bench/ingest_throughput.py
	$(BIN)/python bench/shard_write.py

clean:
	rm -rf $(OUT) .pytest_cache
