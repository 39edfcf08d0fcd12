#!/usr/bin/env bash
# Installs moto (an S3-compatible server, from PyPI) into a venv of its own for the media-on-S3
# integration test (scripts/py-venv.sh: idempotent, pinned). Prints the path of the venv's
# `moto_server` on its last line.
#
#   tests/s3/setup.sh            # venv at <target dir>/moto-venv
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
workspace="$(cd "$here/../.." && pwd)"
venv="${MOTO_VENV:-${CARGO_TARGET_DIR:-$workspace/target}/moto-venv}"

# Pinned so a new release cannot change what the test proves.
exec "$workspace/scripts/py-venv.sh" "$venv" moto_server "moto[s3,server]==5.2.5"
