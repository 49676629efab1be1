#!/usr/bin/env bash
# Release builds compile for the processor that builds them (Package.swift: -target-cpu native,
# unless KDGPU_TARGET_CPU names another). A .build folder made on another processor (a checkout
# moved or shared between machines) may hold code this one cannot run, and SwiftPM would not
# rebuild it, since the flags read the same: so when the processor or KDGPU_TARGET_CPU changed
# since the last build, the release products are removed first and rebuilt for this one.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -r /proc/cpuinfo ]]; then
    processor=$(awk -F': ' '/^(vendor_id|cpu family|model|model name|flags)\t/ && !seen[$1]++ { print $2 }' /proc/cpuinfo \
        | tr '\n' ' ' | sha256sum | cut -c1-16)
    name=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
else
    name=$(sysctl -n machdep.cpu.brand_string 2>/dev/null || uname -m)
    processor=$(printf '%s' "$name" | shasum -a 256 | cut -c1-16)
fi
signature="${KDGPU_TARGET_CPU:-native} $processor"
stamp=.build/kdgpu-build-processor
if [[ -f $stamp && $(cat "$stamp") != "$signature" ]]; then
    echo "build: .build was compiled for another processor or target (${KDGPU_TARGET_CPU:-native}); rebuilding for this one ($name)"
    rm -rf .build/release .build/*-*-*/release
fi
mkdir -p .build
printf '%s\n' "$signature" > "$stamp"
