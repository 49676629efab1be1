#!/usr/bin/env bash
# Installs the Debian packages kdgpu builds and runs with, when any is missing. Idempotent: a
# machine that has them all is left alone. Uses sudo when not root.
set -euo pipefail

packages=(
    ocl-icd-opencl-dev opencl-headers  # OpenCL ICD loader and headers
    libclblast-dev                     # CLBlast: GEMMs on OpenCL devices
    pocl-opencl-icd                    # PoCL: an OpenCL device on the CPU (used when there is no GPU)
    libdnnl-dev                        # oneDNN: the host GEMM engine (dispatches by instruction set)
    libopenblas0                       # OpenBLAS: the second host engine (loaded at run time), the GEMM bench's reference
    libssl-dev                         # OpenSSL: SHA-256 of teacher files and teacher-cache shards
    openmpi-bin                        # Open MPI: mpirun and libmpi (loaded at run time) for data-parallel training
    clinfo pkg-config
)

missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done

if ((${#missing[@]})); then
    if [ "$(id -u)" -eq 0 ]; then
        sudo=()
    elif command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        echo "setup: missing Debian packages: ${missing[*]}; run 'apt-get install ${missing[*]}' as root, then run this again" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v swift >/dev/null 2>&1; then
    echo "setup: no 'swift' on PATH; install the Swift 6 toolchain (https://swift.org/install) and run this again" >&2
    exit 1
fi
