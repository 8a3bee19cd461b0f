#!/usr/bin/env bash
# Set up (idempotent), run the linters (scripts/lint.sh) and the whole test suite.
# CI's .ci/run calls this.
set -o errexit -o nounset -o pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$here/scripts/setup.sh"
export PATH="$PATH:/usr/sbin:/sbin"
cd "$here"
# Linters first (ruff, mypy --strict, shellcheck, actionlint; any finding fails the run).
# PIPELINE_SKIP_LINT=1 skips them for a quick local test run; CI never sets it.
if [ -z "${PIPELINE_SKIP_LINT:-}" ]; then
  "$here/scripts/lint.sh"
fi
exec "$here/.venv/bin/python" -m pytest -n "${PYTEST_WORKERS:-2}" "$@"
