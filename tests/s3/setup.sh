#!/usr/bin/env bash
# Installs moto (an S3-compatible server, from PyPI) into a venv of its own for the media-on-S3
# integration test. Idempotent: a venv whose marker matches the pinned version is left alone.
# Prints the path of the venv's `moto_server` on its last line.
#
#   tests/s3/setup.sh            # venv at <target dir>/moto-venv
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
workspace="$(cd "$here/../.." && pwd)"
venv="${MOTO_VENV:-${CARGO_TARGET_DIR:-$workspace/target}/moto-venv}"

# Pinned so a new release cannot change what the test proves.
pkgs=("moto[s3,server]==5.2.5")
marker="$venv/.uphub-moto"
want="${pkgs[*]}"

if [[ -x "$venv/bin/moto_server" && -f "$marker" && "$(cat "$marker")" == "$want" ]]; then
  echo "$venv/bin/moto_server"
  exit 0
fi

python="${PYTHON:-python3}"
command -v "$python" >/dev/null || { echo "setup.sh: $python not found" >&2; exit 2; }

mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
if command -v flock >/dev/null; then flock 9; fi
if [[ -x "$venv/bin/moto_server" && -f "$marker" && "$(cat "$marker")" == "$want" ]]; then
  echo "$venv/bin/moto_server"
  exit 0
fi

"$python" -m venv "$venv" >&2
if ! "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check "${pkgs[@]}" >&2; then
  echo "setup.sh: could not install ${pkgs[*]} from PyPI" >&2
  exit 3
fi
echo "$want" >"$marker"
echo "$venv/bin/moto_server"
