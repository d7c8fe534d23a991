# tinyqml developer entry points. Every target creates .venv when it is missing.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_PIN := torch==2.13.0

# MCU code generation: host compiler, Cortex-M4 cross-compiler + newlib (semihosting), and QEMU (Debian packages)
MCU_TOOLS := gcc arm-none-eabi-gcc arm-none-eabi-size qemu-system-arm
MCU_PACKAGES := gcc gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# distributed search: a throwaway PostgreSQL server on loopback for the tests (.ci/postgres; Debian package)
PG_PACKAGES := postgresql

.PHONY: demo test bench install clean mcu-tools postgres-tools

$(VPY):
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip setuptools wheel

$(STAMP): $(VPY) pyproject.toml
	$(VPY) -m pip install -q $(TORCH_PIN)
	$(VPY) -m pip install -q -e '.[all,test]'
	touch $(STAMP)

install: $(STAMP)

# installs the MCU tools with apt when one is missing (sudo only when not root); without apt it says what to install
mcu-tools:
	@missing=; for t in $(MCU_TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	case "$$(arm-none-eabi-gcc -print-file-name=rdimon.specs 2>/dev/null)" in /*) ;; *) missing="$$missing newlib";; esac; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
		echo "mcu-tools: missing$$missing and no apt-get; install $(MCU_PACKAGES) (MCU tests skip without them)" >&2; exit 0; fi; \
	echo "mcu-tools: missing$$missing; installing $(MCU_PACKAGES)"; \
	$(SUDO) apt-get update -q && \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(MCU_PACKAGES)

# installs PostgreSQL with apt when initdb/pg_ctl cannot be found (sudo only when not root); without apt it says what to install
postgres-tools:
	@if .ci/postgres bindir >/dev/null 2>&1; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
		echo "postgres-tools: no initdb/pg_ctl and no apt-get; install PostgreSQL ($(PG_PACKAGES)) (PostgreSQL tests skip without it)" >&2; exit 0; fi; \
	echo "postgres-tools: no initdb/pg_ctl; installing $(PG_PACKAGES)"; \
	$(SUDO) apt-get update -q && \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(PG_PACKAGES)

demo: $(STAMP)
	$(VENV)/bin/tinyqml demo

# pytest against a throwaway PostgreSQL server (.ci/postgres), stopped afterwards whatever pytest's outcome;
# without a server the PostgreSQL tests skip (they fail when TINYQML_REQUIRE_POSTGRES is set, as in CI)
test: $(STAMP) mcu-tools postgres-tools
	@trap '.ci/postgres stop || exit 1' EXIT; trap 'exit 130' INT; trap 'exit 143' TERM; \
	url=$$(.ci/postgres start) || { echo "test: no PostgreSQL server started; its tests skip (fail when TINYQML_REQUIRE_POSTGRES is set)" >&2; url=; }; \
	echo "TINYQML_TEST_POSTGRES_URL=$$url $(VPY) -m pytest -q tests"; \
	TINYQML_TEST_POSTGRES_URL="$$url" $(VPY) -m pytest -q tests

bench: $(STAMP)
	$(VPY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info runs
