# Packer >= 1.7 only: the amazon plugin this template needs, installed by `packer init .`.
#
# Kept alone in this file because Packer 1.6.6 (Debian's package, amazon builder bundled)
# rejects `required_plugins`; `invoke bake` leaves this file out on 1.6.x.
# imds_support on the amazon-ebs builder needs plugin >= 1.2.2 (hashicorp/packer-plugin-amazon#346).
packer {
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.2.2"
    }
  }
}
