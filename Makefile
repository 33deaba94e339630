# Set-up and everyday commands. `make test` and `make demo` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv test test-thorough demo bench clean

# The CPU wheel of torch goes in first: a plain `torch` requirement would pull a CUDA build.
$(STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test,examples,bench,lightning,hf,safetensors,onnx]' torch==2.13.0
	for p in plugins/*/; do [ -f $$p/pyproject.toml ] && $(BIN)/python -m pip install --quiet -e $$p || true; done
	touch $(STAMP)

venv: $(STAMP)

test: venv
	$(BIN)/python -m pytest

test-thorough: venv
	HYPOTHESIS_PROFILE=thorough $(BIN)/python -m pytest

demo: venv
	$(BIN)/lcdsl compress specs/demo.lc --model lenet300 --data digits --out runs/demo

# Benchmarks (bench/README.md): a bounded quick mode by default, `make bench FULL=1` for the tables
# of docs/benchmarks.md (long: Fashion-MNIST training, n up to 1e7).
bench: venv
	$(BIN)/python bench/cstep.py $(if $(FULL),--full,)
	$(BIN)/python bench/overhead.py $(if $(FULL),,--quick)
	$(BIN)/python bench/quality.py $(if $(FULL),,--quick)
	$(BIN)/python bench/resnet.py $(if $(FULL),,--quick --repeats 1 --batches 4)
	$(BIN)/python bench/cstep_ranks.py $(if $(FULL),,--smoke --repeats 2 --out runs/bench/cstep_ranks-smoke.json)
	$(BIN)/python bench/memory.py $(if $(FULL),,--quick)
	$(if $(FULL),$(BIN)/python bench/quality.py --model lenet5,)

clean:
	rm -rf $(VENV) build dist runs .pytest_cache .hypothesis
