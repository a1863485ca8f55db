# Two commands for a newcomer: `make demo` and `make test`. Each creates .venv with pip.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CUDA builds run on the CPU; these exact releases install from the machine's disk.
TORCH := torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?= -n 2

.PHONY: demo test lint bench docs gallery clean

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	touch $@

$(VENV)/.demo: $(VENV)/.torch pyproject.toml
	$(PIP) install -q -e '.[demo]'
	touch $@

# lxt (the AttnLRP authors' library) is a test peer; its declared dependencies (bitsandbytes,
# open_clip, ...) are not needed for the parts the tests call, so it installs without them.
LXT := lxt==2.1

$(VENV)/.test: $(VENV)/.torch pyproject.toml
	$(PIP) install -q -e '.[test,demo,viz,cli]'
	$(PIP) install -q --no-deps $(LXT)
	touch $@

$(VENV)/.docs: $(VENV)/.torch pyproject.toml
	$(PIP) install -q -e '.[docs]'
	touch $@

demo: $(VENV)/.demo
	$(PY) -m fattr demo --out out/demo

# The site (MkDocs Material + mkdocstrings) into out/site; --strict: a broken link or API
# reference fails. `make test` builds it too (tests/run/test_docs.py).
docs: $(VENV)/.docs
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir out/site

# The figures of docs/gallery: the demo's and the examples'.
gallery: $(VENV)/.test
	$(PY) -m fattr demo --out docs/gallery
	$(PY) examples/quickstart.py
	$(PY) examples/compare_methods_resnet.py
	$(PY) examples/vit_transformer.py
	cp out/examples/quickstart.png out/examples/resnet18.png out/examples/vit.png docs/gallery/

test: $(VENV)/.test
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(VENV)/.test
	$(PY) -m ruff check fattr tests benchmarks examples

# benchmarks/RESULTS.md (goals, side-by-side tables, GPU table if measured) and benchmarks/plots/
bench: $(VENV)/.test
	$(PY) benchmarks/run.py --out benchmarks/RESULTS.md

clean:
	rm -rf $(VENV) out .pytest_cache
