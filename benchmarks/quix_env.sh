#!/usr/bin/env bash
# The Quix Streams peer's own virtualenv (its pins differ from ours): created on first use.
# Usage: bash benchmarks/quix_env.sh   -> prints the venv's python
set -euo pipefail
QUIX_VERSION=3.28.1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv="${VIGO_QUIX_VENV:-$here/../.cache/quix-venv}"
stamp="$venv/.quixstreams-$QUIX_VERSION"
if [[ ! -f $stamp ]]; then
    echo "==> creating $venv with quixstreams==$QUIX_VERSION" >&2
    python3.11 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        "quixstreams==$QUIX_VERSION" orjson >&2
    touch "$stamp"
fi
echo "$venv/bin/python"
