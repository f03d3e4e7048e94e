# Quick start: `make demo` runs a real scrubbing report on a bundled model; `make test` runs the tests.
# Each target creates .venv from constraints.txt first (reused when it already holds torch 2.13.0).
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python

.PHONY: venv demo test test-all zoo bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q -c constraints.txt torch==2.13.0
	$(VPY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

demo: venv
	$(VPY) -m scrub.demo

test: venv
	$(VPY) -m pytest -q

test-all: venv
	$(VPY) -m pytest -q -m "slow or not slow"

zoo: venv
	$(VPY) -m scrub.zoo.train --all

clean:
	rm -rf $(VENV) build *.egg-info
