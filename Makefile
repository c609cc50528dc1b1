# Two commands a new user needs: `make demo` (the main job) and `make test`.
.PHONY: install test demo lint format chaos

BIN = $(shell scripts/install.sh 2>/dev/null | tail -n 1)

install:
	scripts/install.sh

test:
	scripts/test.sh

demo:
	scripts/demo.sh

# 100k events under kill -9, a broker restart and a store outage (bench/README.md, "Chaos").
chaos:
	$(BIN)/python -m bench.chaos

lint:
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

format:
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .
