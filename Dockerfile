# syntax=docker/dockerfile:1
# Builds the Stowage binaries once; each service is its own target with its
# own binary as entrypoint, on a small non-root runtime image:
#
#   docker build --target intake -t stowage-intake .   (also ledger, lifecycle, stowctl)
#
# docker-compose.yml builds the three services this way.

FROM rust:1.95-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc make cmake perl \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The registry and target/ are cache mounts, so a rebuild after a code change
# compiles only what changed; the binaries are copied out of the cache.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p stowage-intake -p stowage-ledger -p stowage-lifecycle -p stowctl \
 && mkdir /out \
 && cp target/release/stowage-intake target/release/stowage-ledger target/release/stowage-lifecycle target/release/stowctl /out/

# glibc, libgcc and CA certificates of Debian 12 (the build stage's Debian),
# no shell, no package manager; runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
USER nonroot:nonroot

FROM runtime AS ledger
COPY --from=build /out/stowage-ledger /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/stowage-ledger"]

FROM runtime AS lifecycle
COPY --from=build /out/stowage-lifecycle /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/stowage-lifecycle"]

FROM runtime AS stowctl
COPY --from=build /out/stowctl /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/stowctl"]

# Last, so that a plain `docker build .` gives the API.
FROM runtime AS intake
COPY --from=build /out/stowage-intake /usr/local/bin/
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/stowage-intake"]
