# syntax=docker/dockerfile:1
# wsgate: a static binary on a distroless, non-root base.
#   docker buildx build --platform linux/amd64,linux/arm64 --build-arg VERSION=v0.1.0 -t wsgate .
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/wsgate ./cmd/wsgate

FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/wsgate /wsgate
USER 65532:65532
# Go 1.26's HTTP/2 server accepts websockets over HTTP/2 (extended
# CONNECT, RFC 8441) only with this in the environment at start; it
# changes nothing unless --http2 is given.
ENV GODEBUG=http2xconnect=1
ENTRYPOINT ["/wsgate"]
