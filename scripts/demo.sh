#!/usr/bin/env bash
# Set everything up (idempotent), then run the whole pipeline on the embedded local AWS
# emulator: import, verify, bake, publish, history, rollback.
set -o errexit -o nounset -o pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$here/scripts/setup.sh"
export PATH="$PATH:/usr/sbin:/sbin"
cd "$here"
exec "$here/.venv/bin/invoke" demo "$@"
