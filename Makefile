# nixbus: `make run` runs the example flake through all six services;
# `make test` runs every test (unit, service, end to end with real Nix).
GO            ?= go
PROTOC_GEN_GO := v1.36.12
BIN           := $(CURDIR)/bin
SERVICES      := gerrit-ingest evaluator planner builder cache-uploader reporter
TESTFLAGS     ?= -count=1 -timeout 20m

GOLANGCI_LINT := v2.15.0
# promtool checks deploy/prometheus/alerts.yml (deploy/prometheus_test.go).
PROMTOOL      := v0.316.0
TOOLS         ?= $(HOME)/.cache/nixbus-tools/bin

.PHONY: all build lint promtool proto proto-check proto-release setup test test-s3 test-deploy images vet fmt-check bench run clean

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

# golangci-lint with .golangci.yml: depguard (as internal/archtest),
# forbidigo (no sleeps or background contexts in tests), errorlint,
# staticcheck and friends. Built once from the module proxy, then cached.
lint: $(TOOLS)/golangci-lint-$(GOLANGCI_LINT)
	$(TOOLS)/golangci-lint-$(GOLANGCI_LINT) run ./...

$(TOOLS)/golangci-lint-$(GOLANGCI_LINT):
	mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT)
	mv $(TOOLS)/golangci-lint $@

# promtool, built once from the module proxy (long: it is most of
# Prometheus), then cached; `make test` runs TestAlertRules with it and
# skips that test without it.
promtool: $(TOOLS)/promtool-$(PROMTOOL)

$(TOOLS)/promtool-$(PROMTOOL):
	mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install github.com/prometheus/prometheus/cmd/promtool@$(PROMTOOL)
	mv $(TOOLS)/promtool $@

vet:
	$(GO) vet ./... ./proto/...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); [ -z "$$out" ] || { echo "gofmt needed: $$out" >&2; exit 1; }

test: setup fmt-check vet
	NIXBUS_PROMTOOL=$(TOOLS)/promtool-$(PROMTOOL) $(GO) test $(TESTFLAGS) ./... ./proto/...

# The web pages in a real browser: Debian's chromium driven by playwright-core
# (installed by the script) against a real nixbus; screenshots in
# e2e/web/artifacts/.
test-web: setup
	@scripts/test-web.sh

# The S3 binary cache against a real MinIO on 127.0.0.1; scripts/minio.sh
# builds MinIO once (slow) into ~/.cache/nixbus-minio and reuses it.
test-s3: setup
	NIXBUS_MINIO_BIN=$$(scripts/minio.sh) $(GO) test $(TESTFLAGS) -run 'TestS3' ./e2e/

# The composed system (docker-compose.yml) end to end, with a Docker engine
# it starts if needed; see scripts/deploy-test.sh.
test-deploy: setup
	@scripts/deploy-test.sh

# The images docker-compose.yml runs, built offline (scripts/deploy-images.sh).
images:
	@scripts/docker-setup.sh
	@scripts/deploy-images.sh

bench: setup
	$(GO) test -run '^$$' -bench . -benchtime 1x -benchmem ./services/planner/... ./internal/replay/... ./services/evaluator/... ./e2e/...
	scripts/bench-overhead.sh a b

# The example fails on purpose (a broken job, an eval error): exit 1 is its
# expected verdict; anything else is a real failure.
run: setup build
	@$(BIN)/nixbus run examples/flake; rc=$$?; \
	if [ $$rc -eq 1 ]; then echo "(examples/flake fails on purpose: Verified -1 is the expected result)"; else exit $$rc; fi

clean:
	rm -rf $(BIN) .nixbus
