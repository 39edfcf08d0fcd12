# Stand-in for rust:1-bookworm: Debian 12 with build tools and a rustup toolchain.
# ca-certificates/ holds the build machine's own extra CAs (copied there by docker/test.sh from
# /usr/local/share/ca-certificates, e.g. a TLS-intercepting egress proxy's): rustup and cargo
# in this image then trust what the machine trusts.
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
ARG RUST_TOOLCHAIN=1.95.0
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:$PATH
COPY ca-certificates/ /usr/local/share/ca-certificates/
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gcc libc6-dev make pkg-config \
 && rm -rf /var/lib/apt/lists/* \
 && update-ca-certificates \
 && curl -fsSL -o /tmp/rustup-init \
      https://static.rust-lang.org/rustup/dist/x86_64-unknown-linux-gnu/rustup-init \
 && chmod +x /tmp/rustup-init \
 && /tmp/rustup-init -y --no-modify-path --profile minimal --default-toolchain "$RUST_TOOLCHAIN" \
 && rm /tmp/rustup-init \
 && cargo --version
