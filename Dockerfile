# raftkv, the example replicated key-value service, as a small non-root image.
#
#   docker build -t raftkv .
#   docker run --rm -p 7001:7001 raftkv          # a one-node cluster; http://127.0.0.1:7001/
#   docker compose up                            # three nodes (docker-compose.yml)
#
# The binary is static (CGO off), so the runtime image is distroless: no shell, no package
# manager, about 2 MB besides raftkv, running as uid 65532 ("nonroot").

FROM golang:1.25-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/raftkv ./cmd/raftkv \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/raftkv /raftkv
# The data directory belongs to the nonroot user, and a named volume mounted on it starts
# with that owner.
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
VOLUME /data
# 7001: HTTP API and cluster view; 7101: raft (node to node only).
EXPOSE 7001 7101
# SIGTERM (docker stop) shuts the node down cleanly.
ENTRYPOINT ["/raftkv"]
# One node, a cluster of itself. docker-compose.yml passes the flags of a 3-node cluster.
CMD ["--raft_id=1", "--raft_addr=127.0.0.1:7101", "--http_addr=0.0.0.0:7001", \
     "--http_advertise=127.0.0.1:7001", "--data_dir=/data"]
