# nixbus: `make run` runs the example flake through all six services;
# `make test` runs every test (unit, service, end to end with real Nix).
GO            ?= go
PROTOC_GEN_GO := v1.36.12
BIN           := $(CURDIR)/bin
SERVICES      := gerrit-ingest evaluator planner builder cache-uploader reporter
TESTFLAGS     ?= -count=1 -timeout 20m

.PHONY: all build proto proto-check proto-release setup test vet fmt-check bench run clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# Regenerates proto/ Go code; the output is committed and must not change.
proto: $(BIN)/protoc-gen-go
	@command -v protoc >/dev/null || { echo "protoc missing: apt-get install protobuf-compiler" >&2; exit 1; }
	protoc --plugin=protoc-gen-go=$(BIN)/protoc-gen-go --go_out=proto --go_opt=module=nixbus.dev/nixbus/proto \
		-I proto proto/nixbus/v1/nixbus.proto

$(BIN)/protoc-gen-go:
	GOBIN=$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO)

proto-check: proto
	git diff --exit-code -- proto/

# Records the contract as released: internal/archtest's wire test then
# refuses any later change that is not an addition (nixbus's `buf breaking`).
proto-release:
	cp proto/nixbus/v1/nixbus.proto proto/released/nixbus/v1/nixbus.proto

# Installs what a fresh Debian machine with Go lacks (Nix, protoc).
setup:
	@scripts/setup.sh

vet:
	$(GO) vet ./... ./proto/...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); [ -z "$$out" ] || { echo "gofmt needed: $$out" >&2; exit 1; }

test: setup fmt-check vet
	$(GO) test $(TESTFLAGS) ./... ./proto/...

bench: setup
	$(GO) test -run '^$$' -bench . -benchtime 1x -benchmem ./services/planner/... ./services/evaluator/... ./e2e/...

# The example fails on purpose (a broken job, an eval error): exit 1 is its
# expected verdict; anything else is a real failure.
run: setup build
	@$(BIN)/nixbus run examples/flake; rc=$$?; \
	if [ $$rc -eq 1 ]; then echo "(examples/flake fails on purpose: Verified -1 is the expected result)"; else exit $$rc; fi

clean:
	rm -rf $(BIN) .nixbus
