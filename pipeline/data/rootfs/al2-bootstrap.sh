#!/usr/bin/env bash
# Trimmed from awslabs/amazon-eks-ami templates/al2/runtime/bootstrap.sh (MIT-0):
# same usage and flag handling, enough for an offline contract check and a dry run.
set -o pipefail
set -o nounset
set -o errexit

err_report() {
  echo "Exited with error on line $1"
}
trap 'err_report $LINENO' ERR

print_help() {
  echo "usage: $0 [options] <cluster-name>"
  echo "Bootstraps an instance into an EKS cluster"
  echo ""
  echo "--apiserver-endpoint The EKS cluster API Server endpoint. Only valid when used with --b64-cluster-ca."
  echo "--aws-api-retry-attempts Number of retry attempts for AWS API call (DescribeCluster) (default: 3)"
  echo "--b64-cluster-ca The base64 encoded cluster CA content. Only valid when used with --apiserver-endpoint."
  echo "--container-runtime Specify a container runtime (default: containerd)"
  echo "--dns-cluster-ip Overrides the IP address to use for DNS queries within the cluster."
  echo "--ip-family Specify ip family of the cluster"
  echo "--kubelet-extra-args Extra arguments to add to the kubelet. Useful for adding labels or taints."
  echo "--local-disks Setup instance storage NVMe disks in raid0 or mount the individual disks for use by pods [mount | raid0]"
  echo "--service-ipv6-cidr ipv6 cidr range of the cluster"
  echo "--use-max-pods Sets --max-pods for the kubelet when true. (default: true)"
}

POSITIONAL=()
while [[ $# -gt 0 ]]; do
  key="$1"
  case $key in
    -h | --help) print_help; exit 1 ;;
    --use-max-pods) USE_MAX_PODS="$2"; shift; shift ;;
    --b64-cluster-ca) B64_CLUSTER_CA=$2; shift; shift ;;
    --apiserver-endpoint) APISERVER_ENDPOINT=$2; shift; shift ;;
    --kubelet-extra-args) KUBELET_EXTRA_ARGS=$2; shift; shift ;;
    --aws-api-retry-attempts) API_RETRY_ATTEMPTS=$2; shift; shift ;;
    --container-runtime) CONTAINER_RUNTIME=$2; shift; shift ;;
    --ip-family) IP_FAMILY=$2; shift; shift ;;
    --service-ipv6-cidr) SERVICE_IPV6_CIDR=$2; shift; shift ;;
    --dns-cluster-ip) DNS_CLUSTER_IP=$2; shift; shift ;;
    --local-disks) LOCAL_DISKS=$2; shift; shift ;;
    *) POSITIONAL+=("$1"); shift ;;
  esac
done
set +u
set -- "${POSITIONAL[@]}"
set -u
if [ "$#" -ne 1 ]; then
  echo "ERROR: Must provide the cluster name as the only positional argument"
  print_help
  exit 1
fi
CLUSTER_NAME="$1"
USE_MAX_PODS="${USE_MAX_PODS:-true}"
B64_CLUSTER_CA="${B64_CLUSTER_CA:-}"
APISERVER_ENDPOINT="${APISERVER_ENDPOINT:-}"
KUBELET_EXTRA_ARGS="${KUBELET_EXTRA_ARGS:-}"
DNS_CLUSTER_IP="${DNS_CLUSTER_IP:-10.100.0.10}"

mkdir -p /etc/kubernetes/pki
echo "$B64_CLUSTER_CA" | base64 -d > /etc/kubernetes/pki/ca.crt
sed -i "s,MASTER_ENDPOINT,$APISERVER_ENDPOINT,g" /var/lib/kubelet/kubeconfig
sed -i "s,CLUSTER_NAME,$CLUSTER_NAME,g" /var/lib/kubelet/kubeconfig
echo "KUBELET_EXTRA_ARGS=$KUBELET_EXTRA_ARGS" > /etc/systemd/system/kubelet.service.d/30-kubelet-extra-args.conf
echo "clusterDNS: [$DNS_CLUSTER_IP] max-pods: $USE_MAX_PODS" > /dev/null
systemctl daemon-reload
systemctl enable kubelet
systemctl start kubelet
