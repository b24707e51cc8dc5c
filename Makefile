# MedRec-ZK — see README.md.
#   make test       install what the tests need, then run every test (CI runs this)
#   make generate   reproduce every generated file byte for byte
#   make bench      run the benchmarks and write bench/report.md
#   make dev-keys   rerun the local dev ceremony (changes the dev keys and verifiers)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
GO    ?= go
GOTEST_FLAGS ?= -count=1 -timeout 25m
BENCH_COUNT  ?= 5

.PHONY: all build test vet test-go generate check-generated bench dev-keys clean
all: build

build:
	$(GO) build -o bin/medrec ./cmd/medrec

vet:
	$(GO) vet ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi

test: vet check-generated test-go

test-go:
	$(GO) test $(GOTEST_FLAGS) ./...

# --- generated files ---------------------------------------------------------
# Solidity Groth16 verifiers, from the dev keys' verifying keys.
VERIFIERS := contracts/src/OwnershipVerifier.sol contracts/src/EntitlementVerifier.sol

generate:
	$(GO) run ./internal/cmd/genverifiers -out contracts/src

# Regenerates into a scratch directory and compares with the committed files.
check-generated:
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	  $(GO) run ./internal/cmd/genverifiers -out "$$tmp"; \
	  for f in $(VERIFIERS); do \
	    if ! cmp -s "$$f" "$$tmp/$$(basename $$f)"; then echo "$$f is stale: run make generate"; exit 1; fi; \
	  done; echo "generated files are up to date"

# --- speed ---------------------------------------------------------------------
bench:
	@mkdir -p bench
	$(GO) test -run '^$$' -bench . -benchmem -count $(BENCH_COUNT) ./... | tee bench/raw.txt
	$(GO) run ./internal/cmd/benchreport -o bench/report.md < bench/raw.txt

# --- keys ----------------------------------------------------------------------
# The documented local dev ceremony: three dev contributors, public beacons.
# Its keys are NOT for production. Rewrites prover/devkeys, prover/devceremony and the verifiers.
dev-keys:
	rm -rf prover/devceremony prover/devkeys/*.pk prover/devkeys/*.vk prover/devkeys/manifest.json
	$(GO) run ./cmd/medrec ceremony dev --dir prover/devceremony --out prover/devkeys
	$(MAKE) generate

clean:
	rm -rf bin bench/raw.txt
