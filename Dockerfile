# syntax=docker/dockerfile:1
# wsgate: the static binary on an empty base, non-root, no shell: the image
# that make image builds without a container engine (hack/tools/image),
# from the same inputs: the same go build command, the same base files
# written by the same generator (/etc/passwd, /etc/group, the CA bundle of
# Mozilla's roots), the same user, environment, entrypoint and labels.
#   docker buildx build --platform linux/amd64,linux/arm64 --build-arg VERSION=v0.1.0 \
#     --build-arg REVISION=$(git rev-parse HEAD) --build-arg SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) \
#     --build-arg CREATED=$(date -u -d @$(git log -1 --format=%ct) +%Y-%m-%dT%H:%M:%SZ) -t wsgate .
# (make docker-build passes these.)
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
# The image's files other than the binary, from the image builder.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    cd hack/tools/image && go run . rootfs /out/rootfs

FROM scratch
ARG VERSION=dev
ARG REVISION=
ARG CREATED=
COPY --from=build /out/rootfs/ /
COPY --from=build /out/wsgate /wsgate
USER 65532:65532
# The usual default (there is no shell, nor any other program to find).
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL org.opencontainers.image.source=https://github.com/wsgate/wsgate \
      org.opencontainers.image.version=${VERSION} \
      org.opencontainers.image.revision=${REVISION} \
      org.opencontainers.image.created=${CREATED}
ENTRYPOINT ["/wsgate"]
