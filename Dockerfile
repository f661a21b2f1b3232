# syntax=docker/dockerfile:1
# dn for GPU nodes: a CUDA devel image builds `dn` with --features cuda (candle's CUDA backend compiles its
# kernels with nvcc), a CUDA runtime image runs it (cuBLAS, cuRAND, NVRTC come with the runtime image).
# CUDA is loaded at run time (scripts/lib/cuda.sh): without a GPU the same binary serves and trains on
# the CPU.
#   docker build -t dn:cuda --build-arg CUDA_COMPUTE_CAP=90 .      # 90: H100/H200; 80: A100; 89: L4/L40S
#   docker run --gpus all -v /etc/dn:/etc/dn -v hf-cache:/root/.cache/huggingface dn:cuda
# The same image runs the control plane: `dn serve --config /etc/dn/server.toml` (no GPU needed).
ARG CUDA_VERSION=12.8.1
ARG UBUNTU=ubuntu24.04

FROM nvidia/cuda:${CUDA_VERSION}-devel-${UBUNTU} AS build
ARG CUDA_COMPUTE_CAP=90
ARG RUST_VERSION=1.95.0
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl build-essential pkg-config \
 && rm -rf /var/lib/apt/lists/*
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
    | sh -s -- -y --profile minimal --default-toolchain ${RUST_VERSION}
ENV PATH=/root/.cargo/bin:${PATH} \
    CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP}
WORKDIR /src
COPY . .
RUN bash -c 'source scripts/lib/cuda.sh && cuda_runtime_loading /src \
      && cargo build --release -p dn-cli --features cuda "${CUDA_CARGO_ARGS[@]}"' \
 && install -m 0755 target/release/dn /usr/local/bin/dn

FROM nvidia/cuda:${CUDA_VERSION}-runtime-${UBUNTU}
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/dn /usr/local/bin/dn
COPY configs /etc/dn/examples
# Scratch for checkpoints before upload (data_dir/work) and the Hugging Face cache (base models).
ENV DN_DATA_DIR=/var/lib/dn \
    HF_HOME=/root/.cache/huggingface
VOLUME ["/var/lib/dn", "/root/.cache/huggingface"]
ENTRYPOINT ["dn"]
CMD ["worker", "--config", "/etc/dn/worker.toml"]
