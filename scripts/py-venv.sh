#!/usr/bin/env bash
# A Python venv with pinned PyPI packages, for tests that check us against public tools (payment
# SDKs, moto's S3 server). Idempotent: a venv whose marker matches the pinned packages is left
# alone; concurrent callers serialise on a lock next to it. Prints venv/bin/<program> on its last
# line.
#
#   scripts/py-venv.sh <venv dir> <program> <package==version>...
set -euo pipefail

venv="$1"
program="$2"
shift 2
pkgs=("$@")
marker="$venv/.uphub-packages"
want="${pkgs[*]}"

ready() { [[ -x "$venv/bin/$program" && -f "$marker" && "$(cat "$marker")" == "$want" ]]; }

if ready; then
  echo "$venv/bin/$program"
  exit 0
fi

python="${PYTHON:-python3}"
command -v "$python" >/dev/null || { echo "py-venv.sh: $python not found" >&2; exit 2; }

mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
if command -v flock >/dev/null; then flock 9; fi
if ready; then
  echo "$venv/bin/$program"
  exit 0
fi

"$python" -m venv "$venv" >&2
for p in "${pkgs[@]}"; do
  if ! "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check "$p" >&2; then
    echo "py-venv.sh: could not install $p from PyPI" >&2
    exit 3
  fi
done
echo "$want" >"$marker"
echo "$venv/bin/$program"
