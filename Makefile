# digitnet: `make train` and `make test` each work on a fresh clone (they install first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=

.DEFAULT_GOAL := check
.PHONY: check install train test lint bench bench-serve clean

check: lint test  ## lint, then the test suite

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv with digitnet and its dev tools

train: $(STAMP)  ## train configs/default.yaml (data: $$DIGITNET_DATA_DIR, else download)
	$(BIN)/digitnet train --config configs/default.yaml $(ARGS)

# pytest exits 5 when it collected no tests: treat that as a failure, not a pass.
test: $(STAMP)  ## run the tests (full-MNIST tests read $$DIGITNET_DATA_DIR or ../shared/data/mnist)
	$(BIN)/python -m pytest $(ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; fi; exit $$status

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check digitnet tests bench

bench: $(STAMP)  ## speed and accuracy benchmarks on full MNIST (needs $$DIGITNET_DATA_DIR)
	$(BIN)/python bench/run.py $(ARGS)

bench-serve: $(STAMP)  ## `digitnet serve` under load (needs $$DIGITNET_DATA_DIR; ARGS="--model RUN")
	$(BIN)/python bench/serve_load.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
