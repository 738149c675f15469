# packer: `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SAMPLE ?= sample
MANIFEST ?=
OCR ?=
ASR ?=
OUT ?= Step_3
WORKERS ?= $(shell nproc 2>/dev/null || echo 1)
# make test and make test-quick spread the tests over every core (pytest-xdist, --dist loadgroup:
# the tests of one xdist_group share a worker); TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= $(WORKERS)
QUICK_WORKERS ?= $(WORKERS)
LIMIT ?=
PUBLISH ?=
PACK_FLAGS ?=
PROFILE_FLAGS ?=
NAIVE_VENV ?= .cache/naive-venv
ENERGON_VENV ?= .cache/energon-venv
# pillow-simd uses AVX2 only when compiled for it.
SIMD_CC := $(shell grep -qw avx2 /proc/cpuinfo 2>/dev/null && echo "cc -mavx2" || echo cc)

.PHONY: help install pilot pack report test test-quick lint profile clean energon naive-venv

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  variables: MANIFEST=... OCR=... ASR=... OUT=Step_3 WORKERS=$(WORKERS) LIMIT=N PACK_FLAGS='...'"

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# pillow-simd needs the JPEG, zlib and WebP headers; install them when we are root and they are missing.
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! dpkg -s libwebp-dev >/dev/null 2>&1; then \
		apt-get install -y -q --no-install-recommends libjpeg62-turbo-dev zlib1g-dev libwebp-dev >/dev/null 2>&1 \
		|| echo "note: could not install image headers; pillow-simd may lack WebP"; fi
	CC="$(SIMD_CC)" $(PY) -m pip install -q --no-cache-dir -e '.[dev,simd,dask,loaders,s3]' || { \
		echo "pillow-simd could not be built here: falling back to plain Pillow"; \
		$(PY) -m pip install -q -e '.[dev,pillow,dask,loaders,s3]'; }
	@$(PY) -c "import PIL; from PIL import features; print('imaging:', PIL.__version__, '(webp:', features.check('webp'), ')')"
	touch $@

install: $(VENV)/.installed ## make .venv and install packer with its dependencies (pillow-simd, else Pillow)

$(SAMPLE)/Step_2/data_manifest.jsonl: scripts/make_sample_data.py | $(VENV)/.installed
	$(PY) scripts/make_sample_data.py --out $(SAMPLE)/Step_2

pilot: $(VENV)/.installed ## pack a pilot (the built-in sample data unless MANIFEST=... is given)
ifeq ($(MANIFEST),)
	$(MAKE) --no-print-directory $(SAMPLE)/Step_2/data_manifest.jsonl
	$(PY) -m packer --manifest $(SAMPLE)/Step_2/data_manifest.jsonl --ocr $(SAMPLE)/Step_2/ocr.jsonl \
		--asr $(SAMPLE)/Step_2/asr.jsonl --output-dir $(SAMPLE)/Step_3/shards --label-taxonomy $(SAMPLE)/Step_3/label_taxonomy.json \
		--splits $(SAMPLE)/Step_3/splits.json --workers $(WORKERS) --include-diagnostics $(PACK_FLAGS)
else
	$(PY) -m packer --manifest $(MANIFEST) $(if $(OCR),--ocr $(OCR)) $(if $(ASR),--asr $(ASR)) --output-dir $(OUT)/shards \
		--label-taxonomy $(OUT)/label_taxonomy.json --splits $(OUT)/splits.json --workers $(WORKERS) \
		--examples-limit $(or $(LIMIT),5000) $(PACK_FLAGS)
endif

pack: $(VENV)/.installed ## pack everything: make pack MANIFEST=Step_2/data_manifest.jsonl OCR=Step_2/ocr.jsonl [ASR=Step_2B/asr.jsonl] OUT=Step_3 [PUBLISH=s3://bucket/prefix]
	@test -n "$(MANIFEST)" || { echo "usage: make pack MANIFEST=Step_2/data_manifest.jsonl OCR=Step_2/ocr.jsonl [ASR=Step_2B/asr.jsonl] OUT=Step_3"; exit 2; }
	$(PY) -m packer --manifest $(MANIFEST) $(if $(OCR),--ocr $(OCR)) $(if $(ASR),--asr $(ASR)) --output-dir $(OUT)/shards \
		--label-taxonomy $(OUT)/label_taxonomy.json --splits $(OUT)/splits.json --workers $(WORKERS) \
		$(if $(LIMIT),--examples-limit $(LIMIT)) $(if $(PUBLISH),--publish $(PUBLISH)) $(PACK_FLAGS)

report: $(VENV)/.installed ## rebuild report.html of an earlier pack: make report OUT=Step_3
	$(PY) -m packer.report $(OUT)

test: $(VENV)/.installed ## the whole test suite (its energon tests build .cache/energon-venv when it is missing)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

test-quick: $(VENV)/.installed ## the edit loop: make test less its heavy and slow tests (pyproject.toml's markers)
	$(PY) -m pytest -q -n $(QUICK_WORKERS) --dist loadgroup -m "not heavy and not slow"

# Megatron-Energon's own venv: pyproject's `energon` list alone (it needs PyPI's Pillow, not pillow-simd).
# scripts/side_venv.py builds it once and again only when that list or the Python changes.
energon: $(VENV)/.installed ## a venv with megatron-energon, to load the shards as a training job does
	$(PY) scripts/side_venv.py $(ENERGON_VENV) --extra energon

# The naive baseline's own venv: pyproject's `naive-baseline` list alone (webdataset, Pillow from PyPI).
naive-venv: $(VENV)/.installed
	$(PY) scripts/side_venv.py $(NAIVE_VENV) --extra naive-baseline

profile: $(VENV)/.installed ## throughput: kernel vs naive vs packer at 1..nproc workers, 1M-row plan (profile/)
	@$(MAKE) --no-print-directory naive-venv || \
		echo "note: could not build $(NAIVE_VENV); the naive script runs with packer's Pillow only"
	$(PY) scripts/profile_throughput.py --max-workers $(WORKERS) --naive-python $(NAIVE_VENV)/bin/python $(PROFILE_FLAGS)

lint: $(VENV)/.installed ## ruff
	$(VENV)/bin/ruff check packer tests scripts

clean: ## remove the venv, the sample data and caches
	rm -rf $(VENV) $(SAMPLE) .cache profile .pytest_cache .ruff_cache *.egg-info
