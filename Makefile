# One-command entry points; each sets up what it needs (a venv in .venv, the compiled extension).
# The extension is rebuilt only when a source changed (setup.py keeps ninja's objects in build/).
VENV ?= .venv
PYTHON := $(VENV)/bin/python
BUILT := $(VENV)/.effkernels-built
SOURCES := setup.py $(shell find csrc -type f)

.PHONY: train test bench build check-gpu-image gpu-wheels gpu-extension clean

train: $(BUILT)
	$(PYTHON) -m effkernels.train --out runs/default

test: $(BUILT)
	$(PYTHON) -m pytest -q python_tests

bench: $(BUILT)
	$(PYTHON) perf/run_all.py --out perf/results/local-$$(date +%Y-%m-%d)

# The GPU machine's torch 2.11 (C++17) and Triton 3.6 in .venv-gpu-image: build everything, CUDA C++
# included, and run the test suite with them (.ci/check_gpu_image): Triton 3.6 interprets the kernels
# and compiles them for sm_90.
check-gpu-image:
	.ci/check_gpu_image

# The optional wheels the GPU image has no registry to fetch, pinned as in requirements.txt, into
# wheels/ (git-ignored): carry it to the GPU machine, where perf/gpu_check.sh installs them.
gpu-wheels:
	python3 -m pip download -q --no-deps -d wheels $$(grep -E '^nvidia-(nvimgcodec|nvjpeg)' requirements.txt)

# effkernels._C built here for the GPU image (Python 3.12, torch 2.11.0+cu130, sm_90) into
# gpu-extension/ (git-ignored): carry it to the GPU machine, where perf/gpu_check.sh uses it in place
# of its build phase when it matches the checkout, torch and GPU.
gpu-extension:
	bash perf/build_gpu_extension.sh

build:  # forces a (still incremental) rebuild, e.g. after changing EFFKERNELS_CUDA
	rm -f $(BUILT)
	$(MAKE) $(BUILT)

$(BUILT): $(VENV)/.requirements $(SOURCES)
	$(PYTHON) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

$(VENV)/.requirements: requirements.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q -r requirements.txt
	touch $@

clean:
	rm -rf $(VENV) .venv-gpu-image build *.egg-info effkernels/_C*.so
