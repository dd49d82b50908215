# egress-run: `make` builds, `make test` tests, `make demo` shows it, `make bench` measures it.
PREFIX ?= /usr/local
CARGO ?= cargo
PYTHON ?= python3
RELEASE := target/release

.PHONY: all build test unit fuzz e2e lint demo bench install uninstall clean wheel

# Cases per property when fuzzing the rule parser and the policy decoder (bounded, for CI).
FUZZ_CASES ?= 20000

all: build

# The man pages and shell completions come from the same clap definition as --help.
build:
	$(CARGO) build --release --workspace
	$(RELEASE)/egress-run-gen $(RELEASE)/share

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

MAN_PAGES := egress-run egress-run-report egress-run-suggest egress-run-doctor
SHARE := $(DESTDIR)$(PREFIX)/share
BASH_COMPLETION := $(SHARE)/bash-completion/completions/egress-run
ZSH_COMPLETION := $(SHARE)/zsh/site-functions/_egress-run
FISH_COMPLETION := $(SHARE)/fish/vendor_completions.d/egress-run.fish

install: build
	install -D -m 755 $(RELEASE)/egress-run $(DESTDIR)$(PREFIX)/bin/egress-run
	install -D -m 755 $(RELEASE)/libegress_preload.so $(DESTDIR)$(PREFIX)/lib/egress-run/libegress_preload.so
	for page in $(MAN_PAGES); do \
		install -D -m 644 $(RELEASE)/share/man/$$page.1 $(SHARE)/man/man1/$$page.1 || exit 1; \
	done
	install -D -m 644 $(RELEASE)/share/completions/egress-run.bash $(BASH_COMPLETION)
	install -D -m 644 $(RELEASE)/share/completions/_egress-run $(ZSH_COMPLETION)
	install -D -m 644 $(RELEASE)/share/completions/egress-run.fish $(FISH_COMPLETION)

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/egress-run $(DESTDIR)$(PREFIX)/lib/egress-run/libegress_preload.so
	for page in $(MAN_PAGES); do rm -f $(SHARE)/man/man1/$$page.1; done
	rm -f $(BASH_COMPLETION) $(ZSH_COMPLETION) $(FISH_COMPLETION)

clean:
	$(CARGO) clean
