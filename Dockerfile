# syntax=docker/dockerfile:1
# Multi-stage build: dependencies are compiled in their own cached layer, the runtime image holds
# only the binary (the page's assets are built into it) and a non-root user.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /app
# 1. Dependencies only (cached until Cargo.toml/Cargo.lock change).
COPY Cargo.toml Cargo.lock ./
COPY bench/Cargo.toml bench/Cargo.toml
RUN mkdir -p src bench/src templates \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && echo 'fn main() {}' > bench/src/main.rs \
 && cargo build --release --locked -p broadcast-server \
 && rm -rf src bench/src
# 2. The project itself; templates/ and assets/ are compiled into the binary.
COPY src src
COPY templates templates
COPY assets assets
COPY bench bench
RUN touch src/main.rs src/lib.rs && cargo build --release --locked -p broadcast-server

FROM debian:bookworm-slim AS runtime
# The system CA roots: `rediss://` trusts them (plus any `--redis-ca-cert`), and the slim image
# has none.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home broadcast
WORKDIR /app
COPY --from=build /app/target/release/broadcast-server /usr/local/bin/broadcast-server
ENV HOST=0.0.0.0 PORT=3000 LOG_FORMAT=json
USER broadcast
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
  CMD ["broadcast-server", "--healthcheck"]
ENTRYPOINT ["broadcast-server"]
