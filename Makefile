# Two commands do everything on a fresh machine:
#   make demo   build, start mock model backends + abgate, send traffic, show the split
#   make test   install what is missing, run every test, check every shipped config

CARGO ?= cargo

.PHONY: demo test deps bench lint

# cmake builds pingora; curl is the tests' reference HTTP client for truncated streams;
# nats-server is the real JetStream broker of the fleet tests; the duckdb Python package
# runs the scale-out analysis SQL in tests/analyze_sql.rs.
deps:
	@for tool in cmake:cmake curl:curl nats-server:nats-server python3:python3; do \
	  cmd=$${tool%%:*}; pkg=$${tool##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || test -x /usr/sbin/$$cmd || { echo "installing $$pkg (needed by the build or the tests)"; \
	    (apt-get update -qq && apt-get install -y -qq $$pkg) || \
	    (sudo apt-get update -qq && sudo apt-get install -y -qq $$pkg); }; \
	done
	@python3 -c 'import duckdb' 2>/dev/null || { echo "installing the duckdb Python package (tests/analyze_sql.rs)"; \
	  python3 -m pip install --quiet duckdb || python3 -m pip install --quiet --break-system-packages duckdb || \
	  { (apt-get install -y -qq python3-pip || sudo apt-get install -y -qq python3-pip) && \
	    (python3 -m pip install --quiet duckdb || python3 -m pip install --quiet --break-system-packages duckdb); }; }

demo: deps
	$(CARGO) run --release -- demo

test: deps
	$(CARGO) test --workspace --all-targets
	@# the integration tests built target/debug/abgate; reuse it
	@for f in configs/*.toml; do ./target/debug/abgate check $$f || exit 1; done

# Style gates: formatting and clippy warnings (CI runs them after the tests; see docs/development.md).
lint:
	$(CARGO) fmt --all --check
	@if $(CARGO) clippy --version >/dev/null 2>&1; then \
	  $(CARGO) clippy --workspace --all-targets -- -D warnings; \
	else echo "clippy is not installed (rustup component add clippy): lint skipped"; fi

bench: deps
	$(CARGO) bench
