#!/usr/bin/env bash
# Runs `kdgpu bench` and writes its table into README.md between the bench markers, so the
# README's figures are what the code prints. Usage: scripts/readme-bench.sh [SUITE...]
set -euo pipefail
cd "$(dirname "$0")/.."
make -s build >/dev/null
table=$(mktemp)
trap 'rm -f "$table"' EXIT
{
    echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)) with \`kdgpu bench $*\`:"
    echo
    echo '```'
    .build/release/kdgpu bench "$@" 2>/dev/null
    echo '```'
} > "$table"
python3 - "$table" <<'PY'
import sys, re
table = open(sys.argv[1]).read()
readme = open("README.md").read()
begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
if begin not in readme or end not in readme:
    sys.exit("README.md lacks the <!-- bench:begin --> / <!-- bench:end --> markers")
head, rest = readme.split(begin, 1)
_, tail = rest.split(end, 1)
open("README.md", "w").write(head + begin + "\n" + table + end + tail)
PY
echo "README.md: benchmark table updated"
