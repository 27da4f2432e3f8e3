# One command each: `make demo` (install, then the offline demo) and `make test` (install, then the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test bench fashion-mnist clean

$(BIN)/noisylab: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	$(BIN)/pip install -e '.[test]'
	touch $@

install: $(BIN)/noisylab

demo: install
	$(BIN)/noisylab demo

test: install
	$(BIN)/python -m pytest

# Optional: Debian's Fashion-MNIST files, for `noisylab demo --dataset fashion-mnist` (needs root).
fashion-mnist:
	apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist

clean:
	rm -rf $(VENV) runs .pytest_cache
