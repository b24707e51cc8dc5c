# MedRec-ZK — see README.md.
#   make run        the whole system on this machine (network, gateways, demo, web app)
#   make test       install what the tests need, then run every test (CI runs this)
#   make fuzz       fuzz every request decoder briefly (FUZZTIME each; part of make test)
#   make generate   reproduce every generated file byte for byte
#   make bench      run the benchmarks and write bench/report.md
#   make dev-keys   rerun the local dev ceremony (changes the dev keys and verifiers)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
GO    ?= go
GOTEST_FLAGS ?= -count=1 -timeout 25m
BENCH_COUNT  ?= 5
# contracts/' pinned npm packages (solc-js, solhint), installed by npm ci (rule below).
NPM_STAMP := contracts/node_modules/.installed-stamp
# The stock FHIR client the gateway's tests drive (fhir-kit-client, pinned), the same way.
FHIRCLIENT_DIR   := dbmanager/testdata/fhirclient
FHIRCLIENT_STAMP := $(FHIRCLIENT_DIR)/node_modules/.installed-stamp

.PHONY: all build run test vet test-go gas fuzz generate check-generated lint-contracts bench dev-keys clean
all: build

build:
	$(GO) build -o bin/medrec ./cmd/medrec

# The whole system on this machine: 3 provider authorities (geth Clique),
# their own local ceremony's keys (the first run; verifiers compiled from
# them with contracts/' solc-js), their gateways, demo data, and the web app.
# Ctrl-C stops; run again resumes.
run: bin/geth build $(NPM_STAMP)
	bin/medrec run --dir .medrec --geth $(CURDIR)/bin/geth --contracts $(CURDIR)/contracts

vet:
	$(GO) vet ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi

test: vet check-generated lint-contracts test-go gas fuzz

# The contracts' gas report (`gas: <operation> <gas>`), checked against
# contracts/testdata/gas.golden and the goals; -update-gas rewrites the file.
gas:
	$(GO) test -count=1 -run '^(TestGasReport|TestEnrolProven)$$' -v ./contracts | grep -E '(gas: |^(ok|FAIL|---))'

# --- fuzzing ---------------------------------------------------------------------
# Every decoder of requests (and of what users paste into the wallet) has a
# native Go fuzz test. test-go already runs their seed corpora — the f.Add
# seeds and the files under each package's testdata/fuzz/FuzzX — as ordinary
# tests; this fuzzes each target further, FUZZTIME each, or FUZZTIME_GATEWAY
# for the targets that go through a whole gateway on a simulated chain (a
# few hundred requests a second; their time includes replaying the corpus,
# seeds and what earlier runs found in $GOCACHE/fuzz — go clean -fuzzcache
# empties the latter when it grows too big to replay in time).
# go test -fuzz takes one target per run (scripts/fuzz-one.sh: it runs a
# target again when Go's coordinator ends a run that found nothing with a
# bare deadline error, golang/go#75804). Interesting inputs are not
# minimized (too slow there). A failing input is saved under
# <package>/testdata/fuzz/FuzzX/: commit it with the fix, as a regression
# seed. For a longer search: make fuzz FUZZTIME=1m FUZZTIME_GATEWAY=5m.
FUZZTIME         ?= 3s
FUZZTIME_GATEWAY ?= 10s
FUZZ_TARGETS := \
	access:FuzzParseScope access:FuzzScopeMask access:FuzzParsePurpose \
	gatewayauth:FuzzCheck prover:FuzzParseProof tagcode:FuzzParse \
	wallet:FuzzParseShareBundle wallet:FuzzParseViewerCommitment \
	dbmanager/store:FuzzParseTag dbmanager/fhirval:FuzzStrict dbmanager/fhirval:FuzzValidate \
	dbmanager/ingest:FuzzImportBundle dbmanager/ingest:FuzzNDJSONLine dbmanager/ingest:FuzzFeedBundle \
	dbmanager/fhirsearch:FuzzParse dbmanager/fhirsearch:FuzzParseDate dbmanager/fhirsearch:FuzzExtract \
	dbmanager:FuzzDecodeStrict dbmanager:FuzzParseFields dbmanager:FuzzSearchParams \
	dbmanager:FuzzAuthorizeRequest dbmanager:FuzzTokenRequest smartauth:FuzzGrant
FUZZ_GATEWAY_TARGETS := \
	dbmanager:FuzzPublicPost dbmanager:FuzzAdminPost dbmanager:FuzzSignedRequest dbmanager:FuzzAuthHeaders \
	dbmanager:FuzzSMARTEndpoints dbmanager:FuzzFeedEndpoints

# fuzz-run TARGETS, TIME: fuzz each pkg:FuzzX of TARGETS for TIME.
fuzz-run = for t in $(1); do \
	  pkg=./$${t%%:*}; fn=$${t\#\#*:}; \
	  echo "--- fuzzing $$fn in $$pkg for $(2)"; \
	  scripts/fuzz-one.sh $(GO) $$pkg $$fn $(2) || exit 1; \
	done

fuzz:
	@for t in $$(git grep --untracked -o '^func Fuzz[A-Za-z0-9_]*' -- '*_test.go' | sed -E 's|/[^/]*_test\.go:func |:|'); do \
	  case " $(FUZZ_TARGETS) $(FUZZ_GATEWAY_TARGETS) " in *" $$t "*) ;; *) echo "$$t is missing from FUZZ_TARGETS"; exit 1;; esac; \
	done
	@$(call fuzz-run,$(FUZZ_TARGETS),$(FUZZTIME))
	@$(call fuzz-run,$(FUZZ_GATEWAY_TARGETS),$(FUZZTIME_GATEWAY))

# The chain tests run real Clique nodes: go-ethereum v1.13.15 is the last
# release that seals Clique. It is built in its own module context (go install
# pkg@version), so our go.mod never sees it. MEDREC_REQUIRE_GETH makes the
# chain tests fail instead of skipping when geth is missing.
GETH_VERSION := v1.13.15

bin/geth:
	GOBIN=$(CURDIR)/bin $(GO) install -ldflags=-checklinkname=0 github.com/ethereum/go-ethereum/cmd/geth@$(GETH_VERSION)

# The tests compile verifiers with contracts/' solc-js (contracts/verifiers,
# `medrec run`, the test keys' insertion verifier): those tests fail rather
# than skip without it.
test-go: export MEDREC_REQUIRE_SOLC ?= 1
test-go: bin/geth $(NPM_STAMP)
	MEDREC_GETH=$(CURDIR)/bin/geth MEDREC_REQUIRE_GETH=1 $(GO) test $(GOTEST_FLAGS) ./...

# The partition and slow-link tests put each node in a network namespace of
# its own (internal/faultnet), and the disk-full test mounts a small tmpfs:
# both need root. CI runs as root and makes a missing root a failure;
# elsewhere, without root, they skip and say why.
test-go: export MEDREC_REQUIRE_ROOT ?= $(if $(CI),1,0)

# The soak (docs/reliability.md), not part of make test: 30 minutes of mixed
# load with an authority restarted every 5 minutes (TestSoak), then the
# fault tests at their long settings — a 60 s partition, each revocation
# window measured 5 times. About 35 minutes; output in soak.log.
SOAK ?= 30m
SOAK_RESTART ?= 5m
.PHONY: soak
soak: bin/geth
	MEDREC_GETH=$(CURDIR)/bin/geth MEDREC_REQUIRE_GETH=1 MEDREC_REQUIRE_ROOT=$(if $(CI),1,0) \
	MEDREC_SOAK=$(SOAK) MEDREC_SOAK_RESTART=$(SOAK_RESTART) MEDREC_FAULT_CYCLES=5 MEDREC_PARTITION_SECONDS=60 \
	$(GO) test -count=1 -timeout 60m -v -run 'TestSoak|TestRevocationFollowsHeads|TestReadsWhileAuthorityDown|TestPartitionAndSlowLinks' ./devnet/ >soak.log 2>&1; \
	rc=$$?; grep -E 'MEASURED|^(---|ok|FAIL|PASS)' soak.log; exit $$rc

# A whole local ceremony with the gateways' batch-insertion circuit (phase 1
# of 2^17, two contributors), its keys proving a batch and the transcript
# verified: far too long for make test (docs/ceremony.md, ADR 0002).
.PHONY: ceremony-insertion
ceremony-insertion:
	MEDREC_CEREMONY_INSERTION=1 $(GO) test -count=1 -timeout 3h -v -run '^TestLocalWithInsertion$$' ./prover/ceremony/

# --- Chromium for the web app's browser test ------------------------------------
# Debian's chromium package (installed with apt when missing); the test fails
# rather than skips without it.
CHROMIUM ?= /usr/bin/chromium
.PHONY: chromium
chromium:
	@test -x $(CHROMIUM) || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# axe-core, which the browser test injects into every page to check WCAG 2.1
# AA: pinned in client/testdata/a11y (its own package.json and lock), installed
# by npm ci like contracts/' packages.
AXE_STAMP := client/testdata/a11y/node_modules/.installed-stamp
$(AXE_STAMP): client/testdata/a11y/package.json client/testdata/a11y/package-lock.json | nodejs
	cd client/testdata/a11y && npm ci --no-audit --no-fund --loglevel=error
	touch $@

test-go: chromium $(AXE_STAMP)
test-go: export MEDREC_CHROMIUM = $(CHROMIUM)
test-go: export MEDREC_REQUIRE_CHROMIUM ?= 1

# --- PostgreSQL for the store tests -------------------------------------------
# test-go runs the dbmanager/store suite against SQLite and against a throwaway
# PostgreSQL cluster on 127.0.0.1:55432 (scripts/postgres-test.sh: installs
# PostgreSQL with apt if missing, starts or reuses the cluster, prints its DSN),
# and fails rather than skips if PostgreSQL is not there. To use another server,
# set MEDREC_TEST_POSTGRES_DSN in the environment.
.PHONY: postgres-test postgres-test-stop
postgres-test:
	@scripts/postgres-test.sh >/dev/null

postgres-test-stop:
	@scripts/postgres-test.sh stop

ifeq ($(origin MEDREC_TEST_POSTGRES_DSN),undefined)
test-go: postgres-test
test-go: export MEDREC_TEST_POSTGRES_DSN = $(shell scripts/postgres-test.sh dsn)
endif
test-go: export MEDREC_REQUIRE_POSTGRES ?= 1

# --- generated files ---------------------------------------------------------
# Generated Solidity (verifiers from the dev keys' verifying keys), the solc
# output (contracts/build/combined.json) and the abigen v2 bindings. Every
# generator writes into a directory given on its command line, so
# check-generated can rebuild everything in a scratch directory and compare.
# Debian's nodejs and npm (installed with apt when missing) run solc-js and solhint.
.PHONY: nodejs
nodejs:
	@command -v node >/dev/null && command -v npm >/dev/null || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nodejs npm >/dev/null; }

$(NPM_STAMP): contracts/package.json contracts/package-lock.json | nodejs
	cd contracts && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# dbmanager's TestStockFHIRClient runs an unmodified FHIR client library
# under node against a gateway on loopback; it fails rather than skips
# without it under make test.
$(FHIRCLIENT_STAMP): $(FHIRCLIENT_DIR)/package.json $(FHIRCLIENT_DIR)/package-lock.json | nodejs
	cd $(FHIRCLIENT_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

test-go: $(FHIRCLIENT_STAMP)
test-go: export MEDREC_REQUIRE_FHIRCLIENT ?= 1

# gen DIR: generated sources → DIR/src, solc → DIR/combined.json, bindings → DIR/gen_bindings.go
gen = mkdir -p $(1)/src && \
	$(GO) run ./internal/cmd/genverifiers -out $(1)/src && \
	$(GO) run ./internal/cmd/genconstants -out $(1)/src && \
	$(GO) run ./internal/cmd/genposeidon -out $(1)/src && \
	node contracts/compile.js --src contracts/src --src $(1)/src --out $(1)/combined.json && \
	$(GO) tool abigen --v2 --combined-json $(1)/combined.json --pkg bindings --out $(1)/gen_bindings.go

GENERATED_SOL := OwnershipVerifier.sol EntitlementVerifier.sol InsertionVerifier.sol Constants.sol Poseidon2.sol

generate: $(NPM_STAMP)
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	  $(call gen,$$tmp); \
	  for f in $(GENERATED_SOL); do cp "$$tmp/src/$$f" contracts/src/$$f; done; \
	  mkdir -p contracts/build contracts/bindings; \
	  cp "$$tmp/combined.json" contracts/build/combined.json; \
	  cp "$$tmp/gen_bindings.go" contracts/bindings/gen_bindings.go

check-generated: $(NPM_STAMP)
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	  $(call gen,$$tmp); \
	  stale=0; \
	  for f in $(GENERATED_SOL); do cmp -s "$$tmp/src/$$f" contracts/src/$$f || { echo "contracts/src/$$f is stale"; stale=1; }; done; \
	  cmp -s "$$tmp/combined.json" contracts/build/combined.json || { echo "contracts/build/combined.json is stale"; stale=1; }; \
	  cmp -s "$$tmp/gen_bindings.go" contracts/bindings/gen_bindings.go || { echo "contracts/bindings/gen_bindings.go is stale"; stale=1; }; \
	  if [ $$stale = 1 ]; then echo "run make generate"; exit 1; fi; \
	  echo "generated files are up to date"

lint-contracts: $(NPM_STAMP)
	cd contracts && npx --no-install solhint --max-warnings 0 'src/**/*.sol'

# --- speed ---------------------------------------------------------------------
bench:
	@mkdir -p bench
	# -p 1: one package's benchmarks at a time, or they share the 2 cores.
	$(GO) test -p 1 -run '^$$' -bench . -benchmem -count $(BENCH_COUNT) ./... | tee bench/raw.txt
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
