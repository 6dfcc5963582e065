# Two commands matter: `make demo` and `make test`. Everything else is what they use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo test lint format check-compose bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel

# Reinstall only when a requirements file changed.
$(STAMP): requirements.txt requirements-dev.txt | $(BIN)/python
	scripts/system-deps.sh demo
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)
	@if [ -x scripts/vendor_js.sh ]; then scripts/vendor_js.sh; fi

demo: install
	$(BIN)/python demo.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

check-compose:
	docker-compose -f docker/compose.yaml config -q

test: 
	scripts/system-deps.sh test
	$(MAKE) install
	$(MAKE) lint
	$(MAKE) check-compose
	$(BIN)/pytest $(PYTEST_ARGS)

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) var artifacts .pytest_cache .ruff_cache
