# Two entry points for people: `make serve` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV ?= .venv
# torch goes in first and pinned: an unpinned torch would drag in whatever build the resolver
# likes best. Override for another build, e.g. TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128".
TORCH ?= torch==2.13.0
BUF ?= @bufbuild/buf@1.75.0
BIN := $(VENV)/bin

.PHONY: serve test lint proto

$(BIN)/.installed: pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ./client -e ".[test]"
	touch $@

serve: $(BIN)/.installed
	$(BIN)/bertserve serve

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy server plugins client/bertserve_client tests tools bench
	$(BIN)/python tools/check_layers.py >/dev/null || $(BIN)/python tools/check_layers.py
	@if command -v npx >/dev/null; then npx --yes $(BUF) lint protos; else echo "npx not found: skipping buf lint"; fi

test: lint
	$(BIN)/pytest -q

proto: $(BIN)/.installed
	$(BIN)/python tools/gen_protos.py
