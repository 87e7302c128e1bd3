# Build, run and test Consent Ledger.
#
# Every variable below can be overridden from the environment or the command
# line, for example:
#
#   make test TESTFLAGS='-run TestConsent -v'
#   make run LEDGER_DATABASE_URL='postgres://me:secret@db.local:5432/ledger'
#   make test ENSURE_POSTGRES=true    # the database server is managed elsewhere

GO        ?= go
GOFMT     ?= gofmt
PSQL      ?= psql
BIN       ?= bin/ledger
PKGS      ?= ./...

# Extra flags for `go test` and `go run ./cmd/ledger-bench`.
TESTFLAGS    ?=
TEST_TIMEOUT ?= 20m
RACE         ?= -race
BENCHFLAGS   ?=

# Makes sure PostgreSQL answers on 127.0.0.1:5432 (installing and starting it
# when needed). Set to `true` to skip.
ENSURE_POSTGRES ?= .ci/ensure-postgres

# The database `make run` and `make migrate` use; it is created when missing.
LEDGER_DATABASE_URL ?= postgres://postgres:postgres@127.0.0.1:5432/ledger?sslmode=disable

.PHONY: build run migrate database ensure-postgres ensure-chromium test bench fuzz soak fmt vet lint clean

build:
	$(GO) build -o $(BIN) ./cmd/ledger

# Serves the API in dev mode on LEDGER_HTTP_ADDR (default :8080); the server
# prints its URL and, unless LEDGER_ADMIN_TOKEN is set, a generated admin token.
run: migrate
	LEDGER_DEV=true LEDGER_DATABASE_URL='$(LEDGER_DATABASE_URL)' $(BIN) serve

migrate: database build
	LEDGER_DATABASE_URL='$(LEDGER_DATABASE_URL)' $(BIN) migrate

# Creates the database named in LEDGER_DATABASE_URL if it does not exist,
# connecting to the `postgres` database of the same server.
database: ensure-postgres
	@set -e; \
	url='$(LEDGER_DATABASE_URL)'; \
	case "$$url" in \
	postgres://* | postgresql://*) ;; \
	*) echo "LEDGER_DATABASE_URL must be a postgres:// URL" >&2; exit 1 ;; \
	esac; \
	command -v $(PSQL) >/dev/null || { echo "$(PSQL) is needed to create the database" >&2; exit 1; }; \
	db=$$(printf '%s' "$$url" | sed -E 's#^[^:]+://[^/?]*/?##; s#\?.*$$##'); \
	admin=$$(printf '%s' "$$url" | sed -E 's#^([^:]+://[^/?]*)/?[^?]*#\1/postgres#'); \
	if [ -n "$$db" ] && [ "$$db" != postgres ]; then \
		printf '%s\n' \
			"SELECT format('CREATE DATABASE %I', :'db') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')" \
			'\gexec' | \
		$(PSQL) "$$admin" -X -q -w -v ON_ERROR_STOP=1 -v db="$$db"; \
	fi

ensure-postgres:
	@$(ENSURE_POSTGRES)

# Installs Debian's chromium for the browser tests when it is missing. Set to
# `true` to skip (the browser tests then skip too, except under CI).
ENSURE_CHROMIUM ?= .ci/ensure-chromium
ensure-chromium:
	@$(ENSURE_CHROMIUM)

test: ensure-postgres ensure-chromium
	$(GO) vet $(PKGS)
	$(GO) test $(RACE) -count=1 -timeout $(TEST_TIMEOUT) $(TESTFLAGS) $(PKGS)

bench: ensure-postgres
	$(GO) run ./cmd/ledger-bench $(BENCHFLAGS)

# Runs each fuzz target for FUZZTIME with FUZZPARALLEL workers. `make test`
# runs their checked-in seeds (testdata/fuzz) as ordinary tests.
FUZZTIME     ?= 5m
FUZZPARALLEL ?= 1
FUZZ_TARGETS ?= FuzzNormalizeVIN:./domain/vehicle FuzzNormalizePhone:./domain/enrollment \
	FuzzSDKGateway:./api FuzzOAuthAuthorize:./api FuzzOAuthToken:./api FuzzReadBundle:./domain/audit
# Runs a steady mixed load (sign-ups, enrollments, steps reads, grants,
# introspections, revocations) against a real server for SOAK_DURATION at
# SOAK_RATE operations/s; fails on errors or memory growth beyond noise.
SOAK_DURATION ?= 10m
SOAK_RATE     ?= 10
soak: ensure-postgres
	SOAK_DURATION=$(SOAK_DURATION) SOAK_RATE=$(SOAK_RATE) $(GO) test -count=1 -run '^TestSoak$$' -v -timeout 0 ./cmd/ledger

fuzz: ensure-postgres
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "== $${t%%:*} ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$${t%%:*}$$" -fuzztime $(FUZZTIME) -parallel $(FUZZPARALLEL) "$${t#*:}"; \
	done

# Fails and lists the files when any Go file is not gofmt-formatted.
# Hidden directories, bin/ and testdata/ are skipped.
fmt:
	@set -e; \
	files=$$(find . \( -path '*/.*' -o -path ./bin -o -name testdata \) -prune \
		-o -type f -name '*.go' -print | sort | xargs -r $(GOFMT) -l); \
	if [ -n "$$files" ]; then \
		echo "not gofmt-formatted (fix with: $(GOFMT) -w FILE...):" >&2; \
		echo "$$files" >&2; \
		exit 1; \
	fi

vet:
	$(GO) vet $(PKGS)

lint: fmt vet

clean:
	rm -f $(BIN)
	rm -rf bin
