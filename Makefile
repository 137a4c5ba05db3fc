# Ganeti-compatible node and master daemons.
#
#   make check   set up everything on a fresh Debian 12 machine and run the whole test suite (CI runs this)
#   make demo    set up and run a three-node cluster on this machine with a kvm instance, start to finish
#
# Everything else is a piece of those two.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
APT_PACKAGES := ganeti ganeti-os-noop iproute2 curl qemu-system-x86 qemu-utils socat

.PHONY: check demo demo-nodes setup apt venv proto proto-check docs docs-check lint typecheck test bench bench-real clean

check: setup proto-check docs-check lint typecheck test

setup: apt venv tests/interop_nodejs/node_modules

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

tests/interop_nodejs/node_modules: tests/interop_nodejs/package.json
	@if command -v npm >/dev/null; then cd tests/interop_nodejs && npm ci --silent --no-audit --no-fund && touch node_modules; fi

# generated/ is committed; regenerate it after editing proto/.
proto: venv
	$(PY) tools/gen_proto.py

proto-check: venv
	$(VENV)/bin/buf lint proto
	$(PY) tools/check_fresh.py generated -- $(PY) tools/gen_proto.py

docs: venv
	$(PY) tools/gen_docs.py
	$(PY) tools/gen_status_table.py

docs-check: venv
	$(PY) tools/check_fresh.py docs/api -- $(PY) tools/gen_docs.py
	$(PY) tools/gen_status_table.py --check
	$(PY) tools/gen_query_fields.py --check
	$(PY) tools/gen_opcode_defs.py --check
	$(PY) tools/gen_config_defaults.py --check

lint: venv
	$(VENV)/bin/ruff check .

typecheck: venv
	$(VENV)/bin/mypy noded compat_jsonrpc masterd tools

test: venv
	$(VENV)/bin/pytest -q -p no:cacheprovider --durations=15

bench: setup
	$(PY) tools/bench/run_bench.py

# The master's job benchmark beside a REAL Ganeti 3.0 master measured in the same run. Changes the
# machine (the real-cluster anchor's up.sh: /etc/hosts entries, a bridge, sshd, a UTS namespace; down.sh
# afterwards, down.sh --purge undoes the rest): on request only, never in CI. Needs root.
bench-real: setup
	$(PY) tools/bench/run_bench.py --only jobs --jobs-real

demo: setup
	$(PY) tools/demo_cluster.py

demo-nodes: setup
	$(PY) tools/demo_nodes.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
