# syntax=docker/dockerfile:1
# The fanout image: the service, plus the default plugin as a file a deployment can point
# FANOUT_PLUGINS at (/usr/share/fanout/plugins). Build and push it to your own registry:
#
#   docker build -t REGISTRY/fanout:TAG . && docker push REGISTRY/fanout:TAG
#
# The two `cargo build` commands are exactly the Makefile's (targets `demo` and `plugins`), so
# the image is built the way the README builds it; .ci/validate-deploy fails if they drift.

FROM rust:1.95-bookworm AS build
# librdkafka is built with OpenSSL (TLS, SCRAM): its headers, found through pkg-config.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
RUN rustup target add wasm32-wasip2
WORKDIR /work
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release -p fanout
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --target wasm32-wasip2 -p by-namespace -p alerts -p archive --target-dir target/plugins

FROM debian:bookworm-slim
# libssl3: the OpenSSL that librdkafka links to. ca-certificates: the system trust store.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /work/target/release/fanout /usr/local/bin/fanout
COPY --from=build /work/target/plugins/wasm32-wasip2/release/by_namespace.wasm /usr/share/fanout/plugins/by_namespace.wasm
USER 65532:65532
EXPOSE 9090
ENTRYPOINT ["fanout"]
CMD ["run"]
