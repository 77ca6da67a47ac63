# Two commands do everything, each with its own set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo lint test test-tflite-runtime test-tools venv mosquitto clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

# mosquitto from Debian's packages, if it is not there yet. The package's own service is not
# used: the demo and the tests start their own broker on a free loopback port.
mosquitto:
	@command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || { \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq mosquitto; }

# What the tests use, from Debian's packages where missing: shellcheck (install.sh), openssl (the
# TLS tests' certificates), systemd-analyze (the unit's verify and security score), gcc (the fake
# delegate the delegate tests compile).
test-tools: mosquitto
	@missing=""; \
	command -v shellcheck >/dev/null || missing="$$missing shellcheck"; \
	command -v gcc >/dev/null || missing="$$missing gcc"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	[ -z "$$missing" ] || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; }

demo: venv mosquitto
	$(BIN)/edge-agent demo --duration 30

# ruff at the version and with the rules pinned in pyproject.toml; `make test` runs it first.
lint: venv
	$(BIN)/ruff check .

test: venv test-tools
	$(MAKE) --no-print-directory lint
	$(BIN)/python -m pytest -q
	$(MAKE) --no-print-directory test-tflite-runtime

# The model and inference tests again on tflite-runtime 2.14 (old boards): its last release needs
# numpy<2 and OpenCV <=4.11.0.86. The agent picks tflite-runtime when LiteRT is not installed.
TFL_VENV := .venv-tflite-runtime
TFL_TESTS := tests/test_model_artifact.py tests/test_model_reference.py tests/test_pipeline.py tests/test_lighting.py tests/test_weather.py tests/test_delegates.py tests/test_gating.py tests/test_alignment.py

$(TFL_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(TFL_VENV)
	$(TFL_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TFL_VENV)/bin/python -m pip install --quiet -e '.[test]' 'tflite-runtime==2.14.0' 'numpy<2' \
		'opencv-python-headless<=4.11.0.86'
	$(TFL_VENV)/bin/python -m pip uninstall --quiet -y ai-edge-litert
	@touch $@

test-tflite-runtime: $(TFL_VENV)/.installed mosquitto
	$(TFL_VENV)/bin/edge-agent version | grep -q 'runtime tflite-runtime'
	$(TFL_VENV)/bin/python -m pytest -q $(TFL_TESTS)

clean:
	rm -rf $(VENV) $(TFL_VENV) demo-out .pytest_cache
