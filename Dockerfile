# syntax=docker/dockerfile:1
# The crossdock image: one static-enough binary on Debian 12, run as a non-root user.
#
#   docker build -t crossdock:0.1.0 .
#   docker run --rm crossdock:0.1.0 --help
#
# The same binary runs on the relay's EC2 instances (infra/terraform/aws installs it on
# Debian 12, whose glibc matches this build's):
#   id=$(docker create crossdock:0.1.0) && docker cp "$id":/usr/local/bin/crossdock . && docker rm "$id"

# --- build ---------------------------------------------------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Everything the workspace needs (see .dockerignore). The cache mounts keep the
# registry and target directory between builds on the same builder.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --package crossdock --bin crossdock \
 && install -D -m 0755 target/release/crossdock /out/crossdock

# --- runtime -------------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates: TLS to AWS and Google APIs. Nothing else: logs go to stderr,
# state lives in S3/GCS. Not version-pinned on purpose: the CA bundle must follow
# Debian's security updates on every rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 crossdock \
 && useradd --system --uid 10001 --gid crossdock --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin crossdock
COPY --from=build /out/crossdock /usr/local/bin/crossdock
USER 10001:10001
ENV CROSSDOCK_LOG_FORMAT=json
# The relay's /metrics and /healthz when run with --metrics-addr 0.0.0.0:9898 (infra/k8s).
EXPOSE 9898
# crossdock is PID 1: it handles SIGTERM/SIGINT itself (drain, capacity restore).
ENTRYPOINT ["crossdock"]
CMD ["--help"]
