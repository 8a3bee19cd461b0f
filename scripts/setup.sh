#!/usr/bin/env bash
# Take a fresh Debian machine to a working state: system packages and the virtualenv.
# Idempotent: a second run installs nothing new. Run as root, or with sudo available.
set -o errexit -o nounset -o pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PIPELINE_VENV:-$here/.venv}"

# command -> Debian package that provides it
declare -A need=(
  [packer]=packer
  [qemu-img]=qemu-utils
  [mkfs.ext4]=e2fsprogs
  [debugfs]=e2fsprogs
  [mkfs.xfs]=xfsprogs
  [sfdisk]=fdisk
  [sgdisk]=gdisk
  [blkid]=util-linux
  [file]=file
  [git]=git
)
missing=()
for cmd in "${!need[@]}"; do
  PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
  missing+=(python3 python3-venv python3-pip)
elif ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi

if [ "${#missing[@]}" -gt 0 ]; then
  mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "setup: installing Debian packages: ${pkgs[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin:/sbin"

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating the virtualenv in $venv" >&2
  "$python" -m venv "$venv"
fi
stamp="$venv/.installed-$(sha256sum "$here/pyproject.toml" | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  echo "setup: installing eks-ami-pipeline with its local and test extras" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "${here}[local,test]"
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
echo "setup: ready ($("$venv/bin/python" --version), $(packer version | head -n1), $(qemu-img --version | head -n1))" >&2
