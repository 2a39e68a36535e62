# Stowage: the two commands of the quick start are `make dev` and `make test`.

STATE    := .stowage
PYTHON   := $(STATE)/venv/localstack/bin/python
STACK    := $(PYTHON) infra/local/stack.py
BOTO3_PY := $(STATE)/venv/moto/bin/python

.PHONY: dev test lint emulators build schemas bench bench-ledger bench-intake bench-lifecycle clean

## make dev: the whole system on the local emulators, until Ctrl-C.
dev: emulators build
	@$(STACK) dev --state $(STATE)

## make test: formatting, lints, unit tests and end-to-end tests.
test: lint emulators
	$(STACK) run --state $(STATE)/test -- cargo nextest run --workspace --no-fail-fast

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

## Installs the emulators (first run only).
emulators:
	@bash infra/local/bootstrap.sh

build:
	cargo build --workspace --bins

## Rewrites events/schemas/ after a deliberate change of the event types.
schemas:
	UPDATE_SCHEMAS=1 cargo test -p stowage-events --test contract

clean:
	rm -rf $(STATE) target

## make bench: the figures in BENCHMARKS.md (release builds).
bench: bench-ledger bench-intake bench-lifecycle

bench-ledger: emulators
	cargo build --release -p stowage-ledger -p stowage-e2e --bins
	$(STACK) run --state $(STATE)/bench -- target/release/bench_ledger target/release/stowage-ledger
	target/release/bench_ledger --stub target/release/stowage-ledger
	target/release/bench_ledger --stub --stub-delay-ms 10 target/release/stowage-ledger

bench-intake: emulators
	cargo build --release -p stowage-intake -p stowage-e2e --bins
	target/release/bench_intake sign --python $(BOTO3_PY) --script infra/local/bench_presign.py
	target/release/bench_intake verify
	target/release/bench_intake floor
	$(STACK) run --state $(STATE)/bench -- target/release/bench_intake load target/release/stowage-intake
	target/release/bench_intake load --stub target/release/stowage-intake
	target/release/bench_intake load --stub --stub-delay-ms 10 target/release/stowage-intake
	target/release/bench_intake load --stub --instructions target/release/stowage-intake
	target/release/bench_intake load --stub --stub-delay-ms 140 target/release/stowage-intake

bench-lifecycle: emulators
	cargo build --release -p stowage-e2e --bin bench_lifecycle
	$(STACK) run --state $(STATE)/bench -- target/release/bench_lifecycle
