# Placeholder until the scale-out issue: builds the CPU `dn` binary. The CUDA multi-stage build for GPU
# nodes (CUDA devel image building with --features cuda, runtime image running `dn worker`) lands there.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p dn-cli

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/dn /usr/local/bin/dn
ENTRYPOINT ["dn"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--data-dir", "/var/lib/dn"]
