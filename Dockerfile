# syntax=docker/dockerfile:1
#
# One image with the three sagacoord binaries: coordinator, participant-sim and sagactl. Every
# service of docker-compose.yml runs it with its own command.
#
#   docker build -t sagacoord:local .
#   docker run --rm sagacoord:local sagactl --help

# The Go release of go.mod's go directive.
ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION} AS build
WORKDIR /src
# Static binaries without cgo run on any base image; -trimpath keeps build paths out of them.
ENV CGO_ENABLED=0 GOFLAGS=-trimpath
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go build -ldflags="-s -w" -o /out/ ./cmd/coordinator ./cmd/participant-sim ./cmd/sagactl

# A small Debian rather than a distroless image: the demo service runs a shell script.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin sagacoord
COPY --from=build /out/ /usr/local/bin/
USER sagacoord
EXPOSE 7233
# --insecure serves the API without TLS or credentials on every interface: for a demo on one
# machine only. In production set --tls-cert, --tls-key and --credentials-file instead (README.md,
# section Production).
CMD ["coordinator", "serve", "--listen", "0.0.0.0:7233", "--insecure"]
