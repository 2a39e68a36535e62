# Builds every Stowage binary once; each service runs from the same small,
# non-root runtime image with its own command.
FROM rust:1.95-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc make cmake perl && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
 && mkdir /out \
 && cp target/release/stowage-intake target/release/stowage-ledger target/release/stowage-lifecycle target/release/stowctl /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home stowage
COPY --from=build /out/ /usr/local/bin/
USER 10001
EXPOSE 8080
CMD ["stowage-intake"]
