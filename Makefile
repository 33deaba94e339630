# Set-up and everyday commands. `make test` and `make demo` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv test test-thorough demo bench bench-full check-specs clean

# The CPU wheel of torch goes in first: a plain `torch` requirement would pull a CUDA build.
$(STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test,examples,bench,lightning,hf]' torch==2.13.0
	for p in plugins/*/; do [ -f $$p/pyproject.toml ] && $(BIN)/python -m pip install --quiet -e $$p || true; done
	touch $(STAMP)

venv: $(STAMP)

test: venv
	$(BIN)/python -m pytest

test-thorough: venv
	HYPOTHESIS_PROFILE=thorough $(BIN)/python -m pytest

demo: venv
	$(BIN)/lcdsl compress specs/demo.lc --model lenet300 --data digits --out runs/demo

clean:
	rm -rf $(VENV) build dist runs .pytest_cache .hypothesis
