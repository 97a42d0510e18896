# One-command entry points; each sets up what it needs (a venv in .venv, the compiled extension).
VENV ?= .venv
PYTHON := $(VENV)/bin/python

.PHONY: train test bench build clean

train: build
	$(PYTHON) -m effkernels.train --out runs/default

test: build
	$(PYTHON) -m pytest -q python_tests

bench: build
	$(PYTHON) perf/run_all.py --out perf/results/local-$$(date +%Y-%m-%d)

build: $(VENV)/.requirements
	$(PYTHON) -m pip install -q --no-build-isolation --no-deps -e .

$(VENV)/.requirements: requirements.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q -r requirements.txt
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info effkernels/_C*.so
