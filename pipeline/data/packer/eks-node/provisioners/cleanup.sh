#!/usr/bin/env bash
# Remove per-instance state so every node booted from the AMI starts fresh
# (same list amazon-eks-ami's validate.sh insists is absent).
set -o errexit -o nounset -o pipefail

[[ $(id -u) -eq 0 ]] || { echo "cleanup.sh must run as root (execute_command uses sudo)" >&2; exit 1; }

rm -rf \
  /etc/hostname \
  /etc/ssh/ssh_host_* \
  /home/ec2-user/.ssh/authorized_keys \
  /root/.ssh/authorized_keys \
  /var/lib/cloud/data \
  /var/lib/cloud/instance \
  /var/lib/cloud/instances \
  /var/lib/cloud/sem \
  /var/lib/dhclient/* \
  /var/log/cloud-init-output.log \
  /var/log/cloud-init.log \
  /var/log/secure \
  /var/log/wtmp
if command -v dnf > /dev/null; then dnf clean all; fi
echo "instance state removed"
