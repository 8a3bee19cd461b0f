#!/usr/bin/env bash
# The linters CI runs (through scripts/test.sh): each fails the run on any finding.
#   ruff          pipeline/ pipeline_dev/ tests/ benchmarks/ (rules: [tool.ruff] in pyproject.toml)
#   mypy --strict pipeline/                                      ([tool.mypy] in pyproject.toml)
#   ShellCheck    every shell script of ours (vendored upstream copies excepted: they are kept
#                 byte-identical, see their PROVENANCE.md) and the user data the tool renders
#   actionlint    .github/workflows/*.yml
# All four come from the test extra (pip wheels that carry their binaries).
set -o errexit -o nounset -o pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${PIPELINE_VENV:-$here/.venv}/bin"
cd "$here"
status=0
run() {
  local name="$1"
  shift
  if "$@"; then
    echo "lint: $name: clean" >&2
  else
    echo "lint: $name: findings above" >&2
    status=1
  fi
}

run ruff "$bin/ruff" check --quiet pipeline pipeline_dev tests benchmarks tasks.py
run mypy "$bin/mypy" --strict --no-error-summary pipeline

mapfile -t scripts < <(git ls-files -- '*.sh' .ci/run \
  | grep -v -e '^tests/data/upstream/' -e '^pipeline/data/rootfs/al2-bootstrap.sh$')
rendered="$(mktemp -d)"
trap 'rm -rf "$rendered"' EXIT
"$bin/python" - "$rendered" <<'PY'
"""Write the shell parts of the user data publish renders for the example configuration."""
import email
import sys
from pathlib import Path

import yaml

from pipeline.core.config import parse_settings
from pipeline.publish import user_data

out = Path(sys.argv[1])
example = Path("pipeline.example.yaml").resolve()
raw = yaml.safe_load(example.read_text())
settings = parse_settings(raw, source=example)
n = 0
for fmt in ("script", "mime"):
    text = user_data.render(settings, "bootstrap.sh", fmt)
    if fmt == "script":
        scripts = [text]
    else:   # the shell parts of the MIME document, as cloud-init reads them
        msg = email.message_from_string(text)
        scripts = [part.get_payload(decode=True).decode() for part in msg.walk()
                   if part.get_content_type() == "text/x-shellscript"]
    for script in scripts:
        n += 1
        (out / f"user-data-bootstrap-{fmt}-{n}.sh").write_text(script)
if n < 2:
    raise SystemExit("lint: no shell user data rendered")
PY
run shellcheck "$bin/shellcheck" --severity=style "${scripts[@]}" "$rendered"/*.sh
run actionlint "$bin/actionlint" .github/workflows/*.yml
exit "$status"
