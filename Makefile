# microseg: make demo · make test · make lab · make lock
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
LOCK := containers/requirements.lock
ND ?= 2
RUN_DIR ?= runs/demo

.PHONY: help demo test test-fast lab lock lint image container test-container clean-venv

help:
	@echo "make demo   run the notebook chain headless on built-in synthetic data (ND=3 for 3D, QUICK=1 for a smoke run, FULL=1 without the demo budget) into $(RUN_DIR)"
	@echo "make test   run the whole test suite (unit tests and every notebook in quick mode)"
	@echo "make lab    open JupyterLab on notebooks/"
	@echo "make lock   regenerate $(LOCK) from pyproject.toml"
	@echo "make image  build the container image (Docker or Podman; BASE_IMAGE=..., TORCH_VARIANT=cpu); make container runs it"
	@echo "make test-container  build the image and run notebooks 01, 02, 05, 07 and JupyterLab in it (see containers/README.md)"

# The environment: every pinned dependency from the lock, then the library, editable.
$(BIN)/.installed: $(LOCK) pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	PYTHON=$(PYTHON) sh containers/install.sh dependencies $(VENV) $(LOCK)
	sh containers/install.sh library $(VENV) .
	touch $@

demo: $(BIN)/.installed
	$(BIN)/python -m microseg demo --run-dir $(RUN_DIR) --ndim $(ND) $(if $(QUICK),--quick) $(if $(FULL),--full)

test: $(BIN)/.installed
	$(BIN)/python -m pytest -m "not container"

test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -m "not slow and not browser and not container"

lab: $(BIN)/.installed
	$(BIN)/jupyter lab --notebook-dir=notebooks

lint: $(BIN)/.installed
	$(BIN)/ruff check lib tests benchmarks

# Resolve pyproject.toml's ranges afresh in a scratch environment and write exact pins.
lock:
	rm -rf build/lock-venv
	$(PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/python -m pip install --quiet --upgrade "pip>=24"
	build/lock-venv/bin/python -m pip install --quiet "torch==2.13.0" -e ".[all]"
	head -n 3 $(LOCK) > $(LOCK).new
	build/lock-venv/bin/python -m pip freeze --all --exclude-editable | grep -v '^pip==' \
		| sed -E 's/^torch==([0-9.]+)\+[a-z0-9]+$$/torch==\1/' >> $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf build/lock-venv
	@echo "wrote $(LOCK); run 'make test' to check that environment.yml, binder/ and containers/ agree"

# The container, with Docker or Podman; see containers/README.md. BASE_IMAGE: a base other than the
# pinned one (containers/make_base.sh makes one from Debian packages); TORCH_VARIANT=cpu: the
# CPU-only torch build.
image:
	BASE_IMAGE="$(BASE_IMAGE)" TORCH_VARIANT="$(TORCH_VARIANT)" containers/build.sh

container:
	containers/run.sh

# Builds the image for real and runs the notebooks and JupyterLab in it (about 25 minutes on 2 cores).
test-container: $(BIN)/.installed
	BASE_IMAGE="$(BASE_IMAGE)" TORCH_VARIANT="$(TORCH_VARIANT)" containers/test_container.sh

clean-venv:
	rm -rf $(VENV)
