# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
# a pip index to take torch from first, e.g. https://download.pytorch.org/whl/cpu (CPU-only
# wheels, a few hundred MB instead of the CUDA build's gigabytes); empty: plain PyPI
TORCH_INDEX ?=
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.partsup-installed

.PHONY: demo test venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(if $(TORCH_INDEX),$(BIN)/pip install --quiet --index-url $(TORCH_INDEX) torch)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/partsup demo

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf runs/demo .pytest_cache
