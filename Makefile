# Every target works in two ways:
#  - by default it creates .venv (if missing) and installs the project with its test extras;
#  - with TENSORKIT_NO_VENV=1, or when PYTHONPATH is set (the lent GPU machine), it uses the
#    python3 already on PATH and installs nothing.
ifeq ($(or $(TENSORKIT_NO_VENV),$(PYTHONPATH)),)
PY := .venv/bin/python
SETUP := .venv/.installed
else
PY := python3
SETUP :=
endif

export NUMBA_CACHE_DIR ?= $(CURDIR)/.cache/numba
export TENSORKIT_CACHE_DIR ?= $(CURDIR)/.cache/tensorkit

.PHONY: test test-gpu demo bench clean

.venv/.installed: pyproject.toml
	test -x .venv/bin/python || python3 -m venv .venv
	.venv/bin/python -m pip install -q --upgrade pip
	# torch is only a test-time reference; 2.13.0 is the CPU build this workplace keeps on disk.
	.venv/bin/python -m pip install -q "torch==2.13.0"
	.venv/bin/python -m pip install -q -e ".[test,tutorials]"
	touch $@

test: $(SETUP)
	# one pytest worker per core when pytest-xdist is there (cold Numba caches compile in parallel)
	$(PY) -m pytest $$($(PY) -c "import xdist" 2>/dev/null && echo "-n auto") tests

# On a machine with a real GPU: the same suite on the real device, with torch unimportable.
test-gpu: $(SETUP)
	TENSORKIT_INTERPRET=0 TENSORKIT_BLOCK_TORCH=1 $(PY) -m pytest $$($(PY) -c "import xdist" 2>/dev/null && echo "-n auto") tests

# Trains a small CNN on sklearn's 8x8 digits (~12 s on 2 CPU cores with a warm Numba cache; a real GPU
# when there is one):
# held-out accuracy, a loss/accuracy plot and a checkpoint under tutorials/out/.
demo: $(SETUP)
	$(PY) tutorials/03_digits_cnn.py

bench: $(SETUP)
	$(PY) benchmarks/run.py

clean:
	rm -rf .venv .cache
