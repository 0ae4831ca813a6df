# Two commands do all the set-up: `make demo` and `make test`.
# Both create .venv when it is missing and install everything pinned.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
DEMO_CONFIG := configs/quickstart/conditional_detr_r18_synthetic.py
DEMO_WORK_DIR := work_dirs/demo
# Test processes (pytest-xdist), each module in one of them; each process
# and the tools it starts use one CPU thread (tests/conftest.py).
TEST_WORKERS ?= 2
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadfile
# Optional for CPU training (docs/speed.md): glibc keeps freed memory in the
# process instead of unmapping it and faulting fresh pages in every step.
CPU_MALLOC_ENV := MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=17179869184
# The oldest supported torch (the newest with prebuilt mmcv 2.1.0 wheels),
# in an environment of its own: `make test-oldest-torch`.
OLDEST_TORCH ?= 2.1.2
OLDEST_VENV ?= .venv-torch$(OLDEST_TORCH)
OLDEST_PY := $(OLDEST_VENV)/bin/python
# The HuggingFace reference of the parity tests there: transformers 5 needs
# torch 2.6, 4.46 still runs on 2.1.
OLDEST_TRANSFORMERS ?= 4.46.3
# numpy 2 needs torch 2.3 or newer.
NUMPY_FOR_TORCH = "$$($(1) -c "import torch; v = tuple(int(p) for p in \
	torch.__version__.split('+')[0].split('.')[:2]); \
	print('numpy<2' if v < (2, 3) else 'numpy')")"

.PHONY: install install-test demo test test-oldest-torch docs-check lint clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt setup.py setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv --system-site-packages $(VENV)
	# Keep a torch that is already importable (e.g. a user's CUDA build);
	# otherwise take the pinned wheel explicitly, never an unpinned one.
	$(PY) -c 'import torch' 2>/dev/null || $(PIP) install torch==$(TORCH_VERSION)
	# Build tools for mmcv (its setup.py needs numpy, ninja and the
	# setuptools that torch pulled in, which still ships pkg_resources).
	$(PIP) install --quiet --upgrade pip wheel ninja $(call NUMPY_FOR_TORCH,$(PY))
	# mmcv 2.1.0 is only published as source on PyPI: build it with its ops
	# against the torch above (pip caches the wheel, so this is slow only once).
	$(PY) -c 'import mmcv.ops' 2>/dev/null || \
		MMCV_WITH_OPS=1 $(PIP) install --no-build-isolation mmcv==2.1.0
	$(PIP) install -r requirements.txt
	$(PIP) install --no-build-isolation --no-deps -e .
	touch $@

install-test: $(VENV)/.installed-test

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt setup.py
	$(PIP) install -r requirements-test.txt
	# The deployment and TensorBoard extras (pinned): their tests run too.
	$(PIP) install --no-build-isolation -e ".[deploy,tensorboard]"
	touch $@

demo: install
	$(PY) tools/misc/make_synthetic_coco.py
	$(CPU_MALLOC_ENV) $(PY) tools/train.py $(DEMO_CONFIG) --work-dir $(DEMO_WORK_DIR)
	$(CPU_MALLOC_ENV) $(PY) tools/test.py $(DEMO_CONFIG) $(DEMO_WORK_DIR)/epoch_$$($(PY) -c "from mmengine import Config; print(Config.fromfile('$(DEMO_CONFIG)').train_cfg.max_epochs)").pth --eval bbox

test: install-test
	$(PY) -m pytest $(PYTEST_PARALLEL) tests

# The tests of training, resuming, testing, ONNX export and the converters
# on the oldest supported torch, in $(OLDEST_VENV) (built once: torch from
# PyPI, mmcv 2.1.0 compiled against it; docs/development.md).
test-oldest-torch: $(OLDEST_VENV)/.installed
	$(OLDEST_PY) -m pytest $(PYTEST_PARALLEL) -m oldest_torch tests

$(OLDEST_VENV)/.installed: requirements.txt requirements-test.txt setup.py \
		Makefile
	test -x $(OLDEST_PY) || python3 -m venv $(OLDEST_VENV)
	$(OLDEST_PY) -m pip install torch==$(OLDEST_TORCH)
	$(OLDEST_PY) -m pip install --quiet --upgrade pip wheel ninja \
		setuptools==80.10.2 $(call NUMPY_FOR_TORCH,$(OLDEST_PY))
	# mmcv's setup.py needs pkg_resources (setuptools below 81). No cache:
	# pip's cache holds an mmcv wheel built against another torch.
	$(OLDEST_PY) -c 'import mmcv.ops' 2>/dev/null || MMCV_WITH_OPS=1 \
		$(OLDEST_PY) -m pip install --no-cache-dir --no-build-isolation \
		mmcv==2.1.0
	$(OLDEST_PY) -m pip install -r requirements.txt \
		$(call NUMPY_FOR_TORCH,$(OLDEST_PY)) pytest pytest-timeout \
		pytest-xdist==3.8.0 transformers==$(OLDEST_TRANSFORMERS)
	$(OLDEST_PY) -m pip install --no-build-isolation -e ".[deploy,tensorboard]" \
		$(call NUMPY_FOR_TORCH,$(OLDEST_PY))
	touch $@

# Every shell command of the README and docs/ as written (after `make demo`;
# blocks that need COCO, GPUs or placeholders are marked in the docs).
docs-check: install-test
	$(PY) tools/misc/docs_check.py

lint: install-test
	$(PY) -m isort --check-only --diff mmdet_cdetr configs tools tests setup.py
	$(PY) -m yapf --diff --recursive mmdet_cdetr configs tools tests setup.py
	$(PY) -m flake8 mmdet_cdetr configs tools tests setup.py

clean:
	rm -rf $(VENV) $(OLDEST_VENV) work_dirs data/synthetic_coco
