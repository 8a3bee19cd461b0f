#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite. CI's .ci/run calls this.
set -o errexit -o nounset -o pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$here/scripts/setup.sh"
export PATH="$PATH:/usr/sbin:/sbin"
cd "$here"
exec "$here/.venv/bin/python" -m pytest -n "${PYTEST_WORKERS:-2}" "$@"
