# syntax=docker/dockerfile:1
# The meethook binary in a small non-root image. Build: docker build -t meethook .
# Run:   docker run -p 8787:8787 -v meethook-data:/var/lib/meethook \
#          -e MEETHOOK_ADMIN_TOKEN=… -e MEETHOOK_PUBLIC_URL=https://hooks.example.com meethook
# (see docs/self-hosting.md).

ARG RUST_VERSION=1

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
# Release build without debug info, stripped; caches keep rebuilds incremental.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=true
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin meethook \
    && install -D -m 0755 target/release/meethook /out/meethook \
    && install -d -m 0700 /out/data

# glibc, CA certificates and a non-root user (uid 65532), no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/meethook /usr/local/bin/meethook
COPY --from=build --chown=65532:65532 /out/data /var/lib/meethook
ENV MEETHOOK_LISTEN=0.0.0.0:8787 \
    MEETHOOK_DATA=/var/lib/meethook
VOLUME ["/var/lib/meethook"]
EXPOSE 8787
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/meethook"]
CMD ["relay"]
