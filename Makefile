# Two commands do all the set-up: `make demo` and `make test`.
# Both create .venv when it is missing and install everything pinned.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
DEMO_CONFIG := configs/quickstart/conditional_detr_r18_synthetic.py
DEMO_WORK_DIR := work_dirs/demo

.PHONY: install install-test demo test docs-check lint clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt setup.py setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv --system-site-packages $(VENV)
	# Keep a torch that is already importable (e.g. a user's CUDA build);
	# otherwise take the pinned wheel explicitly, never an unpinned one.
	$(PY) -c 'import torch' 2>/dev/null || $(PIP) install torch==$(TORCH_VERSION)
	# Build tools for mmcv (its setup.py needs numpy, ninja and the
	# setuptools that torch pulled in, which still ships pkg_resources).
	$(PIP) install --quiet --upgrade pip wheel ninja numpy
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
	$(PY) tools/train.py $(DEMO_CONFIG) --work-dir $(DEMO_WORK_DIR)
	$(PY) tools/test.py $(DEMO_CONFIG) $(DEMO_WORK_DIR)/epoch_$$($(PY) -c "from mmengine import Config; print(Config.fromfile('$(DEMO_CONFIG)').train_cfg.max_epochs)").pth --eval bbox

test: install-test
	$(PY) -m pytest tests

# Every shell command of the README and docs/ as written (after `make demo`;
# blocks that need COCO, GPUs or placeholders are marked in the docs).
docs-check: install-test
	$(PY) tools/misc/docs_check.py

lint: install-test
	$(PY) -m isort --check-only --diff mmdet_cdetr configs tools tests setup.py
	$(PY) -m yapf --diff --recursive mmdet_cdetr configs tools tests setup.py
	$(PY) -m flake8 mmdet_cdetr configs tools tests setup.py

clean:
	rm -rf $(VENV) work_dirs data/synthetic_coco
