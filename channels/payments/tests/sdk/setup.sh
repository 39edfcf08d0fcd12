#!/usr/bin/env bash
# Installs the public payment SDKs that tests/sdk_compat.rs checks our signatures against, into a
# venv of their own (scripts/py-venv.sh: idempotent, pinned). Prints the venv's python3 path on
# its last line.
#
#   channels/payments/tests/sdk/setup.sh            # venv at <workspace>/target/pay-sdk-venv
#   PAY_SDK_VENV=/some/dir channels/payments/tests/sdk/setup.sh
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
workspace="$(cd "$here/../../../.." && pwd)"
venv="${PAY_SDK_VENV:-${CARGO_TARGET_DIR:-$workspace/target}/pay-sdk-venv}"

# Pinned so a new SDK release cannot change what the tests prove.
exec "$workspace/scripts/py-venv.sh" "$venv" python3 "wechatpayv3==2.0.4" "python-alipay-sdk==3.4.0"
