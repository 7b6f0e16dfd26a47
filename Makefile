# The two commands of the README: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_out

export HF_HUB_OFFLINE := 1
export MPLBACKEND := Agg

.PHONY: venv demo test bench clean

venv: $(STAMP)

# Re-installs only when the dependency list changes; every install goes through constraints.txt
# because any torch other than the pinned CPU wheel would pull GBs of CUDA packages.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m medfoundry.demo --out $(DEMO_OUT)

# 3D segmentation on brain-tumour phantoms (<= 5 minutes on 2 cores); see docs/segmentation3d.md
.PHONY: demo-3d
demo-3d: $(STAMP)
	$(PY) -m medfoundry.demo3d --out $(DEMO_OUT)/3d

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) $(DEMO_OUT)
