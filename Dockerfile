# Builds the `ledger` binary and ships it alone on a distroless base.
#
#   docker build -t consentledger/ledger .
#   docker run --rm -p 8080:8080 -e LEDGER_DATABASE_URL=... consentledger/ledger

FROM golang:1.26 AS build
WORKDIR /src

# Dependencies first, so code changes do not download modules again.
COPY go.mod go.sum ./
RUN go mod download

COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /ledger ./cmd/ledger

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /ledger /ledger
EXPOSE 8080
ENTRYPOINT ["/ledger"]
CMD ["serve"]
