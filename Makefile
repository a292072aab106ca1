# Hearth's build. mautrix's federation packages need encoding/json/v2.
export GOEXPERIMENT=jsonv2

GO      ?= go
BIN     := bin
# VERSION comes from the nearest git tag; untagged builds keep the
# version compiled into server.Version.
VERSION ?= $(shell git describe --tags --dirty 2>/dev/null)
LDFLAGS := -s -w $(if $(VERSION),-X hearth/server.Version=$(VERSION))
PKGS    := ./...
# staticcheck runs at a pinned release (go run fetches it through the
# module proxy); bump it with the Go toolchain it must understand.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all run build test race bench load fuzz cross dist clean complement-image complement rust-sdk

all: build

# run: build, write homeserver.yaml + data/ on first use (registration
# closed; create users with bin/hearth register-user -c homeserver.yaml),
# then serve on localhost:8008.
run: build
	@if [ ! -f homeserver.yaml ]; then \
		$(BIN)/hearth generate-config --server-name localhost:8008 --config-path homeserver.yaml --data-dir data; \
	fi
	$(BIN)/hearth serve --config-path homeserver.yaml

build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/hearth ./cmd/hearth

# test: formatting, vet, staticcheck, generated templ code up to date, then
# every test. PostgreSQL runs too when HEARTH_TEST_POSTGRES is set, and the
# federation tests against Synapse when HEARTH_TEST_SYNAPSE names a venv
# made by .ci/synapse-venv (see README).
test:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt -l lists files to format:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run $(STATICCHECK) $(PKGS)
	@if [ -n "$$(find . -name '*.templ' -not -path './.git/*' | head -1)" ]; then \
		echo "checking generated templ code"; \
		$(GO) run github.com/a-h/templ/cmd/templ@$$($(GO) list -m -f '{{.Version}}' github.com/a-h/templ) generate -path . && \
		changed="$$(git status --porcelain -- '*_templ.go')"; \
		if [ -n "$$changed" ]; then echo "templ generate changed files; commit them:"; echo "$$changed"; exit 1; fi; \
	fi
	$(GO) test -timeout 20m $$($(GO) list $(PKGS) | grep -v '^hearth/interop/')
	# mautrix-go's OlmMachine against the server, on its pure-Go goolm
	# backend (libolm needs cgo): server/e2ee_olm_test.go, on one server
	# (TestOlmMachines) and across two federating ones
	# (TestOlmMachinesAcrossServers).
	$(GO) vet -tags goolm ./server
	$(GO) run $(STATICCHECK) -tags goolm ./server
	$(GO) test -tags goolm -run TestOlmMachines -timeout 5m ./server
	# Federation against Synapse (interop/): a step of its own, so that
	# Synapse's Python does not share the two cores with the other tests;
	# with goolm for the OlmMachines of interop/synapse/e2ee_olm_test.go.
	$(GO) vet -tags goolm ./interop/...
	$(GO) run $(STATICCHECK) -tags goolm ./interop/...
	@if [ -z "$$HEARTH_TEST_RUST_SDK" ]; then \
		echo 'matrix-rust-sdk interop tests skip: HEARTH_TEST_RUST_SDK is not set (make rust-sdk, then HEARTH_TEST_RUST_SDK=1 make test)'; \
	fi
	@if [ -z "$$HEARTH_TEST_SYNAPSE" ]; then \
		echo 'Synapse interop tests skip: HEARTH_TEST_SYNAPSE is not set (HEARTH_TEST_SYNAPSE="$$(.ci/synapse-venv)" make test runs them)'; \
	fi
	$(GO) test -tags goolm -timeout 10m ./interop/...
	# Tests that measure latency run last and alone, so that the other
	# tests do not skew their figures (server/timeline_test.go).
	HEARTH_LATENCY_TESTS=1 $(GO) test -run '^TestLatency' -count=1 -v -timeout 5m ./server

bench:
	$(GO) test -run '^$$' -bench . -benchmem -timeout 20m $(PKGS)

# load: the load tool's default phases (docs/load.md) against a hearth it
# builds here and starts on loopback on a fresh SQLite database; a few
# minutes. LOADFLAGS passes flags: LOADFLAGS='-postgres DSN' for
# PostgreSQL (a fresh schema, dropped after), '-json' for JSON,
# '-phases crowd -duration 3m' for the 200-client scenario alone.
LOADFLAGS ?=
load: build
	$(GO) build -trimpath -o $(BIN)/hearth-load ./cmd/hearth-load
	$(BIN)/hearth-load -hearth $(BIN)/hearth $(LOADFLAGS)

# race: every test again under the race detector (go test -race), which
# needs cgo and a C compiler (Debian: gcc). Slower than make test (about
# 12 minutes on two cores with HEARTH_TEST_POSTGRES set); .ci/run runs it
# after make test. The binaries Hearth ships stay pure Go (CGO_ENABLED=0).
race:
	CGO_ENABLED=1 $(GO) test -race -timeout 30m $$($(GO) list $(PKGS) | grep -v '^hearth/interop/')

# fuzz: run each fuzz target for FUZZTIME (default 1m; e.g. FUZZTIME=10m
# make fuzz). Their seed corpora (f.Add, and testdata/fuzz/<target>/ where
# a failure was saved) run in every make test. A failing input is saved
# under the package's testdata/fuzz/: commit it with the fix.
FUZZTIME ?= 1m
# Go stops fuzzing while it minimises a new input (up to 60 s by default),
# which in short runs is most of the run, and a minimisation still going at
# the deadline fails the run with "context deadline exceeded".
FUZZMINIMIZETIME ?= 5s
FUZZ_TARGETS := ./server/rooms:FuzzCanonicalJSON ./server/rooms:FuzzParseEvent ./server/rooms:FuzzAuthRules \
	./server/rooms:FuzzStateRes ./server/rooms:FuzzBuildEvent ./server/federation:FuzzParseXMatrix ./server:FuzzThumbnail
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz: $$name in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $$pkg || exit 1; \
	done

# rust-sdk: the matrix-rust-sdk client of interop/rust-sdk (the SDK inside
# Element X), which interop/rustsdk drives against Hearth when
# HEARTH_TEST_RUST_SDK=1. Built with cargo when cargo is installed (a no-op
# otherwise), into a target directory outside git that later builds reuse.
# The first build compiles ~430 crates: 51 minutes measured with one job on
# two cores busy with other work (less on a quiet machine); with nothing
# changed, later ones take seconds (docs/sliding-sync.md).
RUST_SDK_TARGET ?= $(HOME)/.cache/hearth-ci/rust-sdk-target
rust-sdk:
	@if ! command -v cargo >/dev/null 2>&1; then \
		echo 'rust-sdk: cargo is not installed; the matrix-rust-sdk interop test will skip'; \
	else \
		cd interop/rust-sdk && CARGO_TARGET_DIR='$(RUST_SDK_TARGET)' cargo build --release --locked; \
	fi

# cross: static binaries (CGO_ENABLED=0; SQLite is pure Go) for the usual
# server and single-board targets.
cross:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/hearth-linux-amd64 ./cmd/hearth
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/hearth-linux-arm64 ./cmd/hearth
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/hearth-linux-armv7 ./cmd/hearth

# dist: release archives for linux amd64, arm64 and armv7, each with the
# binary, the systemd unit hearth install writes, and a README
# (appliance/dist/README.md), in $(BIN)/dist/.
DIST_VERSION = $(or $(VERSION),$(shell $(BIN)/hearth version | cut -d' ' -f2))
dist: build cross
	@rm -rf $(BIN)/dist && mkdir -p $(BIN)/dist
	@for arch in amd64 arm64 armv7; do \
		d=$(BIN)/dist/hearth-$(DIST_VERSION)-linux-$$arch; mkdir -p $$d; \
		cp $(BIN)/hearth-linux-$$arch $$d/hearth; \
		$(BIN)/hearth install --print-unit > $$d/hearth.service; \
		cp appliance/dist/README.md $$d/README.md; \
		tar -C $(BIN)/dist -czf $$d.tar.gz $$(basename $$d) && rm -rf $$d; \
		echo "$$d.tar.gz"; \
	done

# complement-image: the Docker image matrix-org/complement runs
# (COMPLEMENT_BASE_IMAGE=complement-hearth). FROM scratch: nothing is pulled.
complement-image:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/hearth-complement ./cmd/hearth-complement
	docker build -t complement-hearth -f appliance/complement/Dockerfile .

# complement: build the image, then run Complement's federation (./tests)
# and client-server (./tests/csapi) suites against it, from a checkout of
# github.com/matrix-org/complement: make complement COMPLEMENT_DIR=../complement
# (COMPLEMENT_RUN=TestX for a subset; appliance/complement/run.sh lists the
# other knobs). Needs Docker; CI has none and never runs it. Logs and pass
# counts go to $(BIN)/complement/.
complement: complement-image
	COMPLEMENT_DIR='$(COMPLEMENT_DIR)' COMPLEMENT_OUT='$(BIN)/complement' appliance/complement/run.sh

# clean removes build output only: homeserver.yaml and data/ hold the
# server's keys and accounts and are never deleted by make.
clean:
	rm -rf $(BIN) coverage.out
