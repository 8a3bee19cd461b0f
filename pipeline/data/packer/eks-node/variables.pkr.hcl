# Every variable the eks-node template uses is declared here, and only here.
# Defaults for a real AWS build live in defaults.pkrvars.hcl; `invoke bake` adds a
# generated var file (build id, base AMI, lineage tags, emulator settings) after it.

variable "aws_region" {
  type        = string
  description = "Region the build instance runs in and the AMI is created in."
  default     = "us-east-1"
}

variable "source_ami_name_filter" {
  type        = string
  description = "With source_ami_id empty: the base is the newest AMI whose name matches this."
  default     = "amazon-eks-node-al2023-x86_64-standard-1.31-*"
}

variable "source_ami_owners" {
  type        = list(string)
  description = "With source_ami_id empty: accounts the base AMI may come from (Amazon EKS)."
  default     = ["602401143452"]
}

variable "source_ami_id" {
  type        = string
  description = "Base AMI id (resolved by `invoke bake` from SSM, an id or a name filter)."
  default     = ""
}

variable "instance_type" {
  type        = string
  description = "Instance type of the temporary build instance."
  default     = "m5.large"
}

variable "ami_name_prefix" {
  type        = string
  description = "AMI name prefix; a UTC timestamp is appended (3-128 chars in total)."
  default     = "eks-node-al2023"
}

variable "ami_description" {
  type        = string
  description = "AMI description."
  default     = "EKS worker node (AL2023) built by eks-ami-pipeline"
}

variable "kubernetes_version" {
  type        = string
  description = "Kubernetes minor version the node image is for, e.g. 1.31."
  default     = "1.31"
}

variable "image_name" {
  type        = string
  description = "Configured image name (pipeline.yaml images[].name)."
  default     = "eks-node-al2023"
}

variable "build_id" {
  type        = string
  description = "Build id carried by every resource this build creates (b-YYYYMMDDhhmmss-xxxxxx)."
  default     = "manual"
}

variable "require" {
  type        = string
  description = "Bootstrap contract the image must keep: any, bootstrap.sh or nodeadm."
  default     = "nodeadm"
}

variable "build_tags" {
  type        = map(string)
  description = "Lineage tags put on the instance, volumes, snapshots and AMI (eks-ami-pipeline:*)."
  default     = {}
}

variable "encrypted" {
  type        = bool
  description = "Encrypt the build instance's root volume and the AMI's snapshot."
  default     = true
}

variable "kms_key_id" {
  type        = string
  description = "KMS key for the encrypted snapshot; empty for the AWS managed key."
  default     = ""
}

variable "root_device_name" {
  type        = string
  description = "Root device of the base AMI (/dev/xvda on Amazon Linux)."
  default     = "/dev/xvda"
}

variable "volume_size" {
  type        = number
  description = "Root volume size in GiB."
  default     = 20
}

variable "volume_type" {
  type        = string
  description = "Root volume type."
  default     = "gp3"
}

variable "volume_throughput" {
  type        = number
  description = "gp3 throughput in MiB/s (125-1000); ignored for other volume types."
  default     = 125
}

variable "communicator" {
  type        = string
  description = "ssh on real AWS; none against the local emulator (then no provisioner runs)."
  default     = "ssh"
}

variable "ssh_username" {
  type        = string
  description = "Login user of the base AMI."
  default     = "ec2-user"
}

variable "subnet_id" {
  type        = string
  description = "Subnet for the build instance; empty for the default VPC."
  default     = ""
}

variable "remote_folder" {
  type        = string
  description = "Folder on the build instance where provisioner scripts are uploaded."
  default     = "/tmp"
}

variable "custom_endpoint_ec2" {
  type        = string
  description = "EC2 endpoint URL (the local emulator); empty for the regional AWS endpoint."
  default     = ""
}

variable "skip_aws_validation" {
  type        = bool
  description = "Skip the STS credential, metadata API and region checks (the emulator has none of them)."
  default     = false
}

variable "aws_poll_delay_seconds" {
  type        = number
  description = "Seconds between Packer's AWS state polls (instance running/stopped/terminated, AMI available). 5 rather than the SDK's 15: each wait overshoots by half a delay on average, and a build waits 4-5 times."
  default     = 5
}

variable "aws_poll_max_attempts" {
  type        = number
  description = "Polls before Packer gives up waiting for an AWS state (720 x 5 s = 1 hour, as 240 x 15 s)."
  default     = 720
}

variable "manifest_output" {
  type        = string
  description = "Where the manifest post-processor writes its JSON (relative to the working directory)."
  default     = "manifest.json"
}

variable "user_provisioners" {
  type        = list(string)
  description = "Your own shell provisioner scripts, run in order after the contract check (paths relative to this folder, or absolute). Empty: none."
  default     = []
}
