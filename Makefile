# MedRec-ZK. `make test` installs what it needs and runs every test;
# `make generate` reproduces every generated file byte for byte.
SHELL := /bin/bash
GO    ?= go
GOTEST_FLAGS ?= -count=1 -timeout 25m

.PHONY: all build test test-go generate check-generated bench vet
all: build

build:
	$(GO) build ./...

vet:
	$(GO) vet ./...

test: vet test-go

test-go:
	$(GO) test $(GOTEST_FLAGS) ./...

# Golden files regenerate with -update; generated sources with `go generate`.
generate:
	$(GO) generate ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
