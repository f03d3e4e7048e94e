# Quick start: `make demo` runs a real scrubbing report on a bundled model; `make test` runs the tests.
# Each target creates .venv from constraints.txt first (reused when it already holds torch 2.13.0).
# `make test-tl4` runs the tests on the TransformerLens 4 line, in .venv-tl4 from constraints-tl4.txt.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
VENV_TL4 := .venv-tl4
VPY_TL4 := $(VENV_TL4)/bin/python

.PHONY: venv venv-tl4 demo test test-tl4 test-all zoo bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q -c constraints.txt torch==2.13.0
	$(VPY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

venv-tl4: $(VENV_TL4)/.installed

$(VENV_TL4)/.installed: pyproject.toml constraints-tl4.txt
	test -x $(VPY_TL4) || $(PY) -m venv $(VENV_TL4)
	$(VPY_TL4) -m pip install -q -c constraints-tl4.txt torch==2.13.0
	$(VPY_TL4) -m pip install -q -c constraints-tl4.txt -e ".[dev]"
	touch $@

demo: venv
	$(VPY) -m scrub.demo

test: venv
	$(VPY) -m pytest -q

test-tl4: venv-tl4
	$(VPY_TL4) -m pytest -q

test-all: venv
	$(VPY) -m pytest -q -m "slow or not slow"

zoo: venv
	$(VPY) -m scrub.zoo.train --all

clean:
	rm -rf $(VENV) $(VENV_TL4) build *.egg-info
