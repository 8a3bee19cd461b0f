# EKS worker-node AMI, baked from an EKS-optimized (or compatible) base AMI.
#
# Layout follows awslabs/amazon-eks-ami templates/al2023: one amazon-ebs source, one build
# with shell provisioners from provisioners/, and a manifest post-processor whose JSON is
# where the AMI ids are read from. Variables: variables.pkr.hcl; defaults: defaults.pkrvars.hcl.
#
# Plain Packer >= 1.7:  packer init . && packer validate . && packer build .
#                       (every variable has a default; -var source_ami_id=ami-... pins the base)
# Packer 1.6.6:         `invoke bake` (builds this file with variables.pkr.hcl, without
#                       plugins.pkr.hcl, and leaves out the block marked below).
packer {
  required_version = ">= 1.6.0"
}

locals {
  skip_provisioners = var.communicator == "none" ? ["amazon-ebs.eks-node"] : []
  user_scripts      = [for s in var.user_provisioners : substr(s, 0, 1) == "/" ? s : "${path.root}/${s}"]
  timestamp         = formatdate("YYYYMMDDhhmmss", timestamp())
  # The build id's random tail keeps names unique when two builds start in one second.
  ami_name = "${var.ami_name_prefix}-${local.timestamp}-${length(var.build_id) >= 6 ? substr(var.build_id, length(var.build_id) - 6, 6) : var.build_id}"
  # Everything this build creates carries the build id and the lineage tags.
  tags = merge(var.build_tags, {
    "eks-ami-pipeline:build-id"   = var.build_id
    "eks-ami-pipeline:image-name" = var.image_name
    "managed-by"                  = "eks-ami-pipeline"
  })
}

source "amazon-ebs" "eks-node" {
  region = var.aws_region
  # The base: var.source_ami_id (what `bake` resolves and passes), else the newest AMI
  # matching var.source_ami_name_filter from var.source_ami_owners (a plain `packer build`).
  source_ami = var.source_ami_id != "" ? var.source_ami_id : null
  dynamic "source_ami_filter" {
    for_each = var.source_ami_id == "" ? [var.source_ami_name_filter] : []
    content {
      filters = {
        name                  = source_ami_filter.value
        "virtualization-type" = "hvm"
      }
      owners      = var.source_ami_owners
      most_recent = true
    }
  }
  instance_type = var.instance_type
  subnet_id     = var.subnet_id

  ami_name                = local.ami_name
  ami_description         = var.ami_description
  ami_virtualization_type = "hvm"
  ena_support             = true

  # Secure defaults: encrypted root volume on the build instance and in the AMI.
  encrypt_boot = var.encrypted
  kms_key_id   = var.kms_key_id
  launch_block_device_mappings {
    device_name = var.root_device_name
    volume_size = var.volume_size
    volume_type = var.volume_type
    # gp3 baseline; Packer 1.6.6 refuses gp3 without explicit iops and throughput.
    iops                  = var.volume_type == "gp3" ? 3000 : null
    throughput            = var.volume_type == "gp3" ? var.volume_throughput : null
    encrypted             = var.encrypted
    delete_on_termination = true
  }

  # amazon-plugin>=1.2.2 begin
  # IMDSv2 only, on the build instance and as the AMI's default (ImdsSupport v2.0).
  # Packer 1.6.6's bundled builder knows neither setting; `invoke bake` drops this
  # block there and sets ImdsSupport on the AMI itself after the build.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 2
  }
  imds_support = "v2.0"
  # amazon-plugin>=1.2.2 end

  run_tags        = merge(local.tags, { Name = "packer-${var.build_id}" })
  run_volume_tags = local.tags
  snapshot_tags   = local.tags
  tags = merge(local.tags, {
    Name                          = local.ami_name
    "eks-ami-pipeline:base-ami"   = var.source_ami_id
    "eks-ami-pipeline:method"     = "bake"
    "eks-ami-pipeline:kubernetes" = var.kubernetes_version
  })

  communicator            = var.communicator
  ssh_username            = var.ssh_username
  temporary_key_pair_name = "packer_${var.build_id}"

  # The local emulator: its endpoint, and no STS / metadata / region checks.
  custom_endpoint_ec2        = var.custom_endpoint_ec2
  skip_credential_validation = var.skip_aws_validation
  skip_metadata_api_check    = var.skip_aws_validation
  skip_region_validation     = var.skip_aws_validation

  aws_polling {
    delay_seconds = var.aws_poll_delay_seconds
    max_attempts  = var.aws_poll_max_attempts
  }
}

# With communicator "none" (the local emulator) nothing can be uploaded, so every
# in-instance provisioner is skipped for this source; the offline check still runs.
build {
  sources = ["source.amazon-ebs.eks-node"]

  provisioner "shell" {
    except          = local.skip_provisioners
    remote_folder   = var.remote_folder
    execute_command = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    environment_vars = [
      "BUILD_ID=${var.build_id}",
      "IMAGE_NAME=${var.image_name}",
      "KUBERNETES_VERSION=${var.kubernetes_version}",
      "SOURCE_AMI_ID=${var.source_ami_id}",
    ]
    script = "${path.root}/provisioners/write-build-info.sh"
  }

  provisioner "shell" {
    except           = local.skip_provisioners
    remote_folder    = var.remote_folder
    execute_command  = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    environment_vars = ["REQUIRE=${var.require}"]
    script           = "${path.root}/provisioners/validate-bootstrap.sh"
  }

  # Extension point: the user's own shell scripts, in order, after the contract check and
  # before the clean-up. List them in var.user_provisioners (in a var file named by
  # images[].bake.var_files), relative to this folder or absolute; keep them under
  # provisioners/ so that `rebuild` notices when they change. Skipped when the list is empty.
  provisioner "shell" {
    except           = length(var.user_provisioners) > 0 ? local.skip_provisioners : ["amazon-ebs.eks-node"]
    remote_folder    = var.remote_folder
    execute_command  = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    environment_vars = ["BUILD_ID=${var.build_id}", "IMAGE_NAME=${var.image_name}"]
    scripts          = length(var.user_provisioners) > 0 ? local.user_scripts : ["${path.root}/provisioners/cleanup.sh"]
  }

  provisioner "shell" {
    except          = local.skip_provisioners
    remote_folder   = var.remote_folder
    execute_command = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    script          = "${path.root}/provisioners/cleanup.sh"
  }

  post-processor "manifest" {
    output     = var.manifest_output
    strip_path = true
    custom_data = {
      build_id           = var.build_id
      image_name         = var.image_name
      source_ami_id      = var.source_ami_id
      kubernetes_version = var.kubernetes_version
    }
  }
}
