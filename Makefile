# nnlc: `make demo` and `make test` are all the set-up a fresh clone needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all bench fuzz clean venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m experiments.demo

test: $(STAMP)
	$(PY) -m pytest tests -m "not slow"

test-all: $(STAMP)  # adds the slow tests (real sweeps, real shared models)
	$(PY) -m pytest tests

bench: $(STAMP)
	$(PY) -m benchmarks.codec_benchmark

fuzz: $(STAMP)  # coverage-guided fuzzing of the decoder (atheris); findings land in fuzz/crashes/
	$(PY) -m pip install --quiet -e '.[fuzz]'
	mkdir -p fuzz/work
	$(PY) fuzz/fuzz_decoder.py fuzz/work fuzz/corpus --keep_going -max_total_time=600 -timeout=10 \
		-rss_limit_mb=2048 -max_len=16384 -artifact_prefix=fuzz/crashes/

clean:
	rm -rf $(VENV) build *.egg-info
