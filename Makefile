# The two commands of the quick start are `make dev` and `make test`; both install what
# they need first (scripts/setup.sh). Every target is a thin call into scripts/.
.PHONY: dev test setup edge origin bench fmt lint clean

dev: setup edge
	scripts/dev.sh

test: setup edge origin
	scripts/test.sh

setup:
	scripts/setup.sh

# The worker: edge/build/index.js + wasm.
edge: setup
	scripts/build-edge.sh

# The origin binary the end-to-end tests start (target/debug/origin), with the same
# features as scripts/test.sh builds it so neither rebuild replaces the other's binary.
origin:
	cargo build -p origin --features otel

bench: setup edge
	scripts/bench.sh

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p origin --all-targets --features otel -- -D warnings

clean:
	rm -rf target edge/build var node_modules
