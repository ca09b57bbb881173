# Cairn. The README's two commands are `make dev` and `make test`.
SHELL := /bin/bash
GO    ?= go
BIN   := bin

.PHONY: dev build test test-go test-bench bench fuzz-short lint generate check-generated breaking postgres clean

## dev: run a local control plane on SQLite with demo objects; prints next steps
dev: build
	./$(BIN)/cairn-dev --dir .cairn --bin $(BIN)

## build: build every command into bin/
build:
	$(GO) build -o $(BIN)/ ./cmd/...

## test: every test, with the store suite on SQLite and PostgreSQL
test: postgres test-go test-bench fuzz-short

test-go:
	$(GO) test -count=1 ./...

# The peers' fan-out harness is its own module (bench/, so the product
# links neither etcd nor NATS); its tests run it at a small N.
test-bench:
	cd bench && $(GO) test -count=1 ./...

# A short run of each fuzz target: long enough to catch regressions of what
# the corpus knows, short enough for every CI run. Budgets are counts of
# executions (about ten seconds each on 2 cores), not durations: with a
# duration, Go 1.26's fuzzing coordinator can report "context deadline
# exceeded" as a failure when the time runs out while a worker is busy
# (go.dev/issue/75804, fixed in Go 1.27), which failed a CI run here with no
# failing input.
fuzz-short:
	$(GO) test -run='^$$' -fuzz=FuzzParse -fuzztime=500000x ./controlplane/internal/selector
	$(GO) test -run='^$$' -fuzz=FuzzUnmarshalEnvelope -fuzztime=300000x ./certs/sign
	$(GO) test -run='^$$' -fuzz=FuzzVerify -fuzztime=100000x ./certs/sign
	$(GO) test -run='^$$' -fuzz=FuzzApplyDelta -fuzztime=150000x ./agent/internal/cache
	$(GO) test -run='^$$' -fuzz=FuzzPlan -fuzztime=250000x ./controlplane/internal/waves
	$(GO) test -run='^$$' -fuzz=FuzzSortKey -fuzztime=500000x ./controlplane/internal/versions
	$(GO) test -run='^$$' -fuzz=FuzzParse -fuzztime=300000x ./controlplane/internal/inventory

## bench: the fleet benchmark (BENCHMARKS.md): etcd, NATS and Cairn on SQLite and PostgreSQL at N agents (default 10000), with Cairn/peer ratios
# The peers run first (bench/'s peerbench, all six systems), then cairn-bench on
# both stores with the agents' data on tmpfs when there is one, then the
# ratios of figures 1, 3 and 4. JSON and the printed tables go to
# $(BENCH_OUT)/fleet-n$(N)-*; the load average before and after each half
# goes into the text. Long: about 20-25 minutes at N=10000 on 2 cores.
N         ?= 10000
BENCH_OUT ?= bench/results
bench: postgres
	$(GO) build -o $(BIN)/ ./cmd/cairn-bench ./cmd/cairn-controlplane
	cd bench && $(GO) build -o ../$(BIN)/peerbench ./cmd/peerbench
	mkdir -p $(BENCH_OUT)
	set -eo pipefail; out=$(BENCH_OUT)/fleet-n$(N); \
	  { echo "make bench N=$(N), $$(date -u +%FT%TZ), $$(nproc) CPUs, kernel $$(uname -r), $$($(GO) env GOVERSION)"; \
	    echo "load before peers: $$(uptime)"; } | tee $$out.txt; \
	  ./$(BIN)/peerbench -system all -n $(N) $(if $(wildcard /dev/shm),-watchers-dir /dev/shm) -json $$out-peers.json | tee -a $$out.txt; \
	  echo "load after peers, before Cairn: $$(uptime)" | tee -a $$out.txt; \
	  ./$(BIN)/cairn-bench -store sqlite,postgres -n $(N) $(if $(wildcard /dev/shm),-agents-dir /dev/shm) \
	    -json $$out-cairn.json | tee -a $$out.txt; \
	  echo "load after Cairn: $$(uptime)" | tee -a $$out.txt; \
	  ./$(BIN)/cairn-bench ratios $$out-cairn.json $$out-peers.json | tee -a $$out.txt

## postgres: make sure PostgreSQL answers at 127.0.0.1:5432 (installs/starts it)
postgres:
	./scripts/ensure-postgres.sh

## lint: buf lint, go vet, gofmt, generated code up to date, buf breaking
lint: check-generated breaking
	$(GO) tool buf lint
	$(GO) vet ./...
	cd bench && $(GO) vet ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi

## generate: regenerate gen/ from proto/
generate:
	$(GO) tool buf generate

check-generated: generate
	@if [ -n "$$(git status --porcelain -- gen)" ]; then \
	  echo "gen/ is out of date with proto/: run 'make generate' and commit"; git status --short -- gen; exit 1; fi

# Compare the API with the previous commit's, when it had one.
breaking:
	@if git rev-parse -q --verify HEAD~1 >/dev/null && git ls-tree -d HEAD~1 proto >/dev/null 2>&1 && [ -n "$$(git ls-tree HEAD~1 proto)" ]; then \
	  $(GO) tool buf breaking --against '.git#ref=HEAD~1'; \
	else echo "buf breaking: no previous API to compare with"; fi

clean:
	rm -rf $(BIN)
