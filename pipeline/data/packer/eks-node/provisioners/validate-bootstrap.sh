#!/usr/bin/env bash
# The bootstrap contract, checked inside the build instance: the image must be able to
# join an EKS cluster through nodeadm (AL2023) or a real /etc/eks/bootstrap.sh (AL2).
# AL2023 EKS AMIs ship a bootstrap.sh *stub* that only prints an error and exits 1
# (awslabs/amazon-eks-ami#2056): its presence proves nothing, so it is refused.
set -o errexit -o nounset -o pipefail

: "${REQUIRE:?REQUIRE is required: any, bootstrap.sh or nodeadm}"
case "${REQUIRE}" in
  any | bootstrap.sh | nodeadm) ;;
  *) echo "REQUIRE must be any, bootstrap.sh or nodeadm, got '${REQUIRE}'" >&2; exit 2 ;;
esac

BOOTSTRAP=/etc/eks/bootstrap.sh
NODEADM=/usr/bin/nodeadm

has_nodeadm() {
  [[ -x "${NODEADM}" ]] || { echo "nodeadm: ${NODEADM} missing or not executable"; return 1; }
  local unit
  for unit in nodeadm-config.service nodeadm-run.service; do
    if [[ ! -f "/etc/systemd/system/${unit}" && ! -f "/usr/lib/systemd/system/${unit}" ]]; then
      echo "nodeadm: ${unit} not installed"
      return 1
    fi
  done
  echo "nodeadm: ${NODEADM} and its systemd units are present"
}

is_stub() {
  # The AL2023 stub is a few hundred bytes that announce the removal and exit 1.
  grep -q 'bootstrap.sh has been removed' "$1" && return 0
  [[ $(wc -c < "$1") -lt 1024 ]] && tail -n 3 "$1" | grep -qx 'exit 1'
}

has_bootstrap_sh() {
  [[ -x "${BOOTSTRAP}" ]] || { echo "bootstrap.sh: ${BOOTSTRAP} missing or not executable"; return 1; }
  if is_stub "${BOOTSTRAP}"; then
    echo "bootstrap.sh: ${BOOTSTRAP} is the AL2023 stub that only exits 1"
    return 1
  fi
  grep -q -- '--apiserver-endpoint' "${BOOTSTRAP}" \
    || { echo "bootstrap.sh: ${BOOTSTRAP} does not take --apiserver-endpoint"; return 1; }
  bash -n "${BOOTSTRAP}" || { echo "bootstrap.sh: ${BOOTSTRAP} is not valid bash"; return 1; }
  echo "bootstrap.sh: ${BOOTSTRAP} is a real bootstrap script"
}

case "${REQUIRE}" in
  nodeadm) has_nodeadm ;;
  bootstrap.sh) has_bootstrap_sh ;;
  any) has_nodeadm || has_bootstrap_sh ;;
esac || { echo "bootstrap contract (${REQUIRE}) does not hold; refusing to create the AMI" >&2; exit 1; }
echo "bootstrap contract (${REQUIRE}) holds"
