# sagacoord: run `make help` for the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.0
GOBIN := $(shell $(GO) env GOPATH)/bin

.PHONY: help build build-testhooks generate lint test test-short fuzz demo demo-tls bench chaos chaos-fast services clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-16s %s\n", $$1, $$2}'

build: ## build the binaries into bin/ (coordinator, participant-sim, sagactl, sagalab)
	$(GO) build -o $(BIN)/ ./cmd/...

build-testhooks: ## build bin/testhooks/coordinator: the coordinator with the chaos suite's --test-* crash points; never ship it
	$(GO) build -tags testhooks -o $(BIN)/testhooks/ ./cmd/coordinator

generate: ## regenerate the gRPC code from proto/ (needs protoc; installs the Go plugins)
	@command -v protoc >/dev/null || { echo "protoc missing: apt-get install -y protobuf-compiler"; exit 1; }
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	PATH="$(GOBIN):$$PATH" protoc -I proto --go_out=gen --go_opt=paths=source_relative \
		--go-grpc_out=gen --go-grpc_opt=paths=source_relative proto/sagacoord/v1/*.proto

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

test: lint ## run every test against the local PostgreSQL and RabbitMQ, with -race
	$(GO) test -race -count=1 -timeout 20m ./...

test-short: ## unit tests only (no services needed where tests allow)
	$(GO) test -race -short ./...

FUZZTIME ?= 20s
fuzz: ## run every Go fuzz target for FUZZTIME each (default 20s); a failing input lands in its package's testdata/fuzz
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

services: ## start the local PostgreSQL and RabbitMQ if they are down
	scripts/services.sh

demo: build services ## run the whole system locally and print how many sagas completed and compensated
	scripts/demo.sh

demo-tls: build ## the demo with TLS on every link and least-privilege broker users, on a PostgreSQL and a RabbitMQ of its own (sagalab sandbox)
	scripts/demo-tls.sh

bench: build services ## measure throughput and latency on the local services with sagalab bench (ARGS="--rate 1000")
	scripts/bench.sh $(ARGS)

CHAOS_REPORT ?= /tmp/sagacoord-chaos-report
chaos: build build-testhooks services ## run every chaos scenario of scenarios/ with sagalab chaos run (report in CHAOS_REPORT, default /tmp/sagacoord-chaos-report; ARGS="--seed 1,2")
	$(BIN)/sagalab chaos run scenarios/ --bin $(BIN) --report $(CHAOS_REPORT) $(ARGS)

chaos-fast: build build-testhooks services ## the chaos scenarios tagged fast: under 10 minutes (report in CHAOS_REPORT-fast)
	$(BIN)/sagalab chaos run scenarios/ --tag fast --bin $(BIN) --report $(CHAOS_REPORT)-fast $(ARGS)

clean: ## remove build outputs
	rm -rf $(BIN)
