#!/usr/bin/env bash
# Record which build produced this image, inside the image (/etc/eks/ami-build-info.env),
# so a running node can be traced back to its build without AWS access.
set -o errexit -o nounset -o pipefail

: "${BUILD_ID:?BUILD_ID is required (the pipeline build id)}"
: "${IMAGE_NAME:?IMAGE_NAME is required}"
: "${KUBERNETES_VERSION:?KUBERNETES_VERSION is required}"
: "${SOURCE_AMI_ID:?SOURCE_AMI_ID is required}"

install -d -m 0755 /etc/eks
umask 022
cat > /etc/eks/ami-build-info.env <<INFO
BUILD_ID=${BUILD_ID}
IMAGE_NAME=${IMAGE_NAME}
KUBERNETES_VERSION=${KUBERNETES_VERSION}
SOURCE_AMI_ID=${SOURCE_AMI_ID}
BUILT_AT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
INFO
echo "wrote /etc/eks/ami-build-info.env for build ${BUILD_ID}"
