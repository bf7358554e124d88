# Phantom build, test and demo targets. `make test` is the command CI runs.

GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo v0.1.0-dev)
LDFLAGS   := -s -w -X github.com/phantom-sec/phantom/pkg/version.Version=$(VERSION)
BINARIES  := $(notdir $(wildcard cmd/*))

.PHONY: all build test sanity contract demo bench generate lint fmt clean manifests manifests-check chart-golden e2e cluster generate-check

all: build

## build: compile the static binaries into bin/
build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ $(addprefix ./cmd/,$(BINARIES))

## test: every suite, including the root-only ones (tmpfs mounts, eBPF, csi-sanity)
test:
	./hack/test.sh

## sanity: csi-sanity against the real gRPC server, tmpfs and OpenBao test server
sanity:
	$(GO) test -count=1 -v ./tests/sanity/

## contract: the OpenBao contract suite (real OpenBao when PHANTOM_TEST_OPENBAO_ADDR is set)
contract:
	$(GO) test -count=1 -v ./tests/contract/

## demo: publish the volume of examples/pod.yaml on this machine (root)
demo: build
	$(GO) run ./examples/demo --node-binary $(BIN)/phantom-node --pod examples/pod.yaml

## bench: benchmarks with their floors measured in the same run
bench:
	$(GO) test -run '^$$' -bench . -benchtime 20x -count 1 ./driver/
	$(GO) test -run '^$$' -bench . -count 1 ./pkg/webhook/ ./pkg/tmpfs/
	$(GO) test -run '^$$' -bench . -benchtime 400000x -count 1 ./pkg/monitor/

## generate: rebuild the eBPF objects and Go bindings (needs clang, llvm, libbpf-dev)
generate:
	$(MAKE) -C bpf generate

## generate-check: fail when the committed eBPF objects differ from a rebuild
generate-check:
	$(MAKE) -C bpf check

## e2e: end-to-end suite on a local single-node cluster (root; the first run compiles Kubernetes)
e2e:
	./hack/e2e.sh

## cluster: a local cluster with Phantom, the OpenBao test server and a sample app, left running
cluster:
	./hack/local-cluster.sh

## lint: vet and formatting
lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)

## manifests: render deploy/phantom.yaml from the Helm chart
manifests:
	$(GO) run ./tests/chart/cmd/render -f deploy/values.yaml -o deploy/phantom.yaml

## manifests-check: fail when deploy/phantom.yaml is stale
manifests-check:
	$(GO) run ./tests/chart/cmd/render -f deploy/values.yaml -o deploy/phantom.yaml -check

## chart-golden: rewrite the chart's golden renders
chart-golden:
	$(GO) test ./tests/chart -run TestGoldenRenders -update
