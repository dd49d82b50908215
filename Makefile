# egress-run: `make` builds, `make test` tests, `make demo` shows it, `make bench` measures it.
PREFIX ?= /usr/local
CARGO ?= cargo
PYTHON ?= python3
RELEASE := target/release

.PHONY: all build test unit fuzz e2e lint demo bench install uninstall clean wheel

# Cases per property when fuzzing the rule parser and the policy decoder (bounded, for CI).
FUZZ_CASES ?= 20000

all: build

build:
	$(CARGO) build --release --workspace

# Unit and property tests, then every end-to-end test inside a private network namespace.
test: build unit fuzz e2e

unit:
	$(CARGO) test --release --workspace
	$(PYTHON) -m pytest -q -p no:cacheprovider python/tests

# The property tests are the fuzz targets (stable Rust has no cargo-fuzz): arbitrary and
# mutated rules and policies must never panic, hang or be accepted wrongly.
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release -p egress-policy --test props

e2e: build
	scripts/sandbox.sh $(PYTHON) -m pytest tests/e2e -q -p no:cacheprovider

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

demo: build
	scripts/demo.sh

# The pytest suite it runs is fetched first: the sandbox's namespace has no network.
bench: build
	PYTHON=$(PYTHON) scripts/bench/fetch.sh
	scripts/sandbox.sh scripts/bench.sh

# A wheel with the launcher, the library, the Python package and the pytest plugin, built
# without a build backend or network (scripts/build_wheel.py): pip install it, then
# `pytest --egress`.
wheel: build
	$(PYTHON) scripts/build_wheel.py

install: build
	install -D -m 755 $(RELEASE)/egress-run $(DESTDIR)$(PREFIX)/bin/egress-run
	install -D -m 755 $(RELEASE)/libegress_preload.so $(DESTDIR)$(PREFIX)/lib/egress-run/libegress_preload.so

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/egress-run $(DESTDIR)$(PREFIX)/lib/egress-run/libegress_preload.so

clean:
	$(CARGO) clean
