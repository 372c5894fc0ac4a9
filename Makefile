# The two commands a newcomer needs: `make run` and `make test`. Both install what is missing first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test setup lint bench

setup:
	@bash scripts/setup.sh

run: setup
	@bash scripts/run-demo.sh

test: setup
	@bash scripts/test.sh

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done
