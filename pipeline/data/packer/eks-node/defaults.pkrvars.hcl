# Defaults for a real AWS build of the EKS node image; pass first, then overrides:
#   packer init . && packer build -var-file=defaults.pkrvars.hcl -var source_ami_id=ami-... -var build_id=manual-1 .
aws_region         = "us-east-1"
instance_type      = "m5.large"
ami_name_prefix    = "eks-node-al2023"
ami_description    = "EKS worker node (AL2023) built by eks-ami-pipeline"
kubernetes_version = "1.31"
image_name         = "eks-node-al2023"
require            = "nodeadm"
source_ami_id      = ""
build_id           = "manual"
