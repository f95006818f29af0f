# sapwood: `make demo` and `make test` set everything up on a fresh Debian 12 machine.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Debian's own python3: readable by unprivileged users (the default one may live in /root).
SYSTEM_PYTHON := /usr/bin/python3
# gcc and patch build pyfuse3 from source with patches/pyfuse3-no-open.patch.
APT_PACKAGES := python3-venv python3-dev gcc patch fuse3 libfuse3-dev pkg-config attr debootstrap \
	ostree borgbackup restic nginx
STAMP := $(VENV)/.installed

.PHONY: setup apt demo test test-long test-boot lint typecheck docs unit bench bench-million clean coverage

setup: $(STAMP)

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml patches/pyfuse3-no-open.patch | apt
	@[ -x $(PY) ] || $(SYSTEM_PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	bash scripts/install-pyfuse3.sh $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: setup
	bash scripts/demo.sh

lint: setup
	$(VENV)/bin/ruff check sapwood store fs mountd tests benchmarks examples scripts
	$(VENV)/bin/ruff format --check sapwood store fs mountd tests benchmarks examples scripts

typecheck: setup
	$(VENV)/bin/mypy

# The suite runs in TEST_WORKERS processes (pytest-xdist), a test file to a process (its
# module fixtures built once), the slowest files first (tests/conftest.py's SLOW_FILES):
# most tests wait on child processes, FUSE, nginx or timeouts, so more processes than a
# 2-core machine's cores pay (serially 16-19 min).
# Tests marked `alone` look machine-wide (at /var/tmp, say): they run afterwards, by
# themselves. --durations: the slow tail, in CI's log.
TEST_WORKERS ?= 4
unit: setup
	status=0; \
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder \
		-m "not alone" --durations=25 \
		|| status=$$?; \
	$(VENV)/bin/pytest -q -m alone || status=$$?; \
	exit $$status

# The API reference of `import sapwood` (docs/api.md is the guide), built by pdoc from the
# docstrings into build/docs/; any warning of pdoc fails the target.
docs: setup
	rm -rf build/docs
	$(PY) scripts/api_docs.py build/docs

test: lint typecheck docs unit

# Long stress and crash runs, not part of `make test`.
test-long: setup
	SAPWOOD_LONG=1 $(VENV)/bin/pytest -q

# Deployments booted in qemu (issue 12), not part of `make test`; as root, about 3 min
# (plus 1.5 min for debootstrap and 25 s for update-initramfs on the first run, cached
# in /var/cache/sapwood-tests). Serial logs and timings land in build/boot-test/.
BOOT_APT_PACKAGES := qemu-system-x86 e2fsprogs
test-boot: setup
	@missing=$$(for p in $(BOOT_APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $$missing; \
	fi
	SAPWOOD_BOOT=1 $(VENV)/bin/pytest -q -s -p no:cacheprovider tests/sysroot/test_boot.py

# Which lines and branches the tests reach (sapwood processes the tests start included):
# text report on stdout and in build/coverage/report.txt, html in build/coverage/html.
# COVERAGE_TESTS picks the tests, e.g. `make coverage COVERAGE_TESTS="tests/store tests/cli"`.
COVERAGE_TESTS ?= tests
COVERAGE_DIR := $(CURDIR)/build/coverage
coverage: setup
	rm -rf $(COVERAGE_DIR) && mkdir -p $(COVERAGE_DIR)
	export COVERAGE_DIR=$(COVERAGE_DIR) COVERAGE_RCFILE=$(CURDIR)/tests/coverage.ini; \
	$(VENV)/bin/coverage run -m pytest -q -p no:cacheprovider $(COVERAGE_TESTS); status=$$?; \
	$(VENV)/bin/coverage combine -q && \
	$(VENV)/bin/coverage report > $(COVERAGE_DIR)/report.txt; \
	$(VENV)/bin/coverage html -q; cat $(COVERAGE_DIR)/report.txt; exit $$status

# Every benchmarks/*_bench.py, then benchmarks/report.py: benchmarks/results/LATEST.md and
# its PNG plots (root drops caches for the cold figures). Each bench is given the options
# its --help offers: --runs $(BENCH_RUNS) (figures are medians), --sizes $(SCALE_SIZES)
# (scale_bench; add 1000000 for the million-file run) and --results (its JSON rows, in
# results/json/; its printed tables go to results/json/NAME.txt), --pause-reclaim (the
# VM's proactive pageout off while scale_bench runs: common.reclaim_paused). BENCHES picks some,
# e.g. `make bench BENCHES="scale commit"`; JSON of earlier runs of the others is kept. Every
# bench but history writes to a journaled ext4 of its own on a loop device (workfs.py);
# SAPWOOD_BENCH_WORK_FS=host makes them write to /var/tmp's own filesystem instead.
BENCH_RESULTS := benchmarks/results
BENCH_RUNS ?= 3
SCALE_SIZES ?= 10000,100000
BENCHES ?= $(patsubst benchmarks/%_bench.py,%,$(wildcard benchmarks/*_bench.py))
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: setup $(BENCH_STAMP)
	@mkdir -p $(BENCH_RESULTS)/json
	@uptime > $(BENCH_RESULTS)/json/uptime-start.txt
	@set -eo pipefail; n=0; total=$(words $(BENCHES)); for b in $(BENCHES); do \
		n=$$((n + 1)); script=benchmarks/$${b}_bench.py; help=$$($(PY) $$script --help); \
		args="--results $(BENCH_RESULTS)/json/$$b.json"; \
		if grep -q -- --runs <<<"$$help"; then args="$$args --runs $(BENCH_RUNS)"; fi; \
		if grep -q -- --sizes <<<"$$help"; then args="$$args --sizes $(SCALE_SIZES)"; fi; \
		if grep -q -- --pause-reclaim <<<"$$help"; then args="$$args --pause-reclaim"; fi; \
		if ! grep -q -- --results <<<"$$help"; then \
			args=""; echo "  ($$script has no --results: not in the report)"; fi; \
		echo "[$$n/$$total] $$(date -u +%H:%M:%S) $$script $$args"; \
		$(PY) $$script $$args | tee $(BENCH_RESULTS)/json/$$b.txt; \
	done
	$(PY) benchmarks/report.py --results $(BENCH_RESULTS)

# The million-file run of the scale benchmark (issue 15), after `make bench` (whose 10,000
# and 100,000 rows it joins in LATEST.md): the tree (~5 GB, cached) and 12.5 GB free under
# /var/tmp for the run's ext4 image (checked before it starts), and three hours here;
# sapwood runs $(BENCH_RUNS) times, OSTree once (45 minutes a run).
bench-million: setup $(BENCH_STAMP)
	@mkdir -p $(BENCH_RESULTS)/json
	@uptime > $(BENCH_RESULTS)/json/uptime-million-start.txt
	$(PY) benchmarks/scale_bench.py --sizes 1000000 --runs $(BENCH_RUNS) --peer-runs 1 --pause-reclaim \
		--results $(BENCH_RESULTS)/json/scale-million.json | tee $(BENCH_RESULTS)/json/scale-million.txt
	$(PY) benchmarks/report.py --results $(BENCH_RESULTS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
