#!/usr/bin/env bash
# Installs the public payment SDKs that tests/sdk_compat.rs checks our signatures against, into a
# venv of their own. Idempotent: a venv whose marker matches the pinned versions is left alone.
# Prints the venv's python3 path on its last line.
#
#   channels/payments/tests/sdk/setup.sh            # venv at <workspace>/target/pay-sdk-venv
#   PAY_SDK_VENV=/some/dir channels/payments/tests/sdk/setup.sh
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
workspace="$(cd "$here/../../../.." && pwd)"
venv="${PAY_SDK_VENV:-${CARGO_TARGET_DIR:-$workspace/target}/pay-sdk-venv}"

# Pinned so a new SDK release cannot change what the tests prove.
pkgs=("wechatpayv3==2.0.4" "python-alipay-sdk==3.4.0")
marker="$venv/.uphub-pay-sdks"
want="${pkgs[*]}"

if [[ -x "$venv/bin/python3" && -f "$marker" && "$(cat "$marker")" == "$want" ]]; then
  echo "$venv/bin/python3"
  exit 0
fi

python="${PYTHON:-python3}"
command -v "$python" >/dev/null || { echo "setup.sh: $python not found" >&2; exit 2; }

# A concurrent test binary may be installing too: serialise on a lock next to the venv.
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
if command -v flock >/dev/null; then flock 9; fi
if [[ -x "$venv/bin/python3" && -f "$marker" && "$(cat "$marker")" == "$want" ]]; then
  echo "$venv/bin/python3"
  exit 0
fi

"$python" -m venv "$venv" >&2
for p in "${pkgs[@]}"; do
  if ! "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check "$p" >&2; then
    echo "setup.sh: could not install SDK $p from PyPI" >&2
    exit 3
  fi
done
echo "$want" >"$marker"
echo "$venv/bin/python3"
