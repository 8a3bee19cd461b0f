"""AMIs, snapshots, volumes and instances whose disk data follows the resources.

moto's RegisterImage keeps only Name/Description and invents a 15 GiB snapshot; CreateImage
and CopyImage copy no data (AWS-FACTS §2). Here:

- RegisterImage keeps BlockDeviceMappings, RootDeviceName, Architecture (default i386),
  VirtualizationType (default paravirtual), EnaSupport, SriovNetSupport, BootMode,
  TpmSupport, ImdsSupport and image TagSpecifications; rejects duplicate names
  (InvalidAMIName.Duplicate), unknown snapshots and volumes smaller than the snapshot.
- RunInstances gives each instance the AMI's block device mappings (request mappings
  overlay them by device name); a volume made from a snapshot starts with its blocks.
- CreateImage snapshots every attached volume (blocks copied) and records the mappings;
  CopyImage (also across regions) copies each snapshot's blocks, and the AMI's tags only
  with CopyImageTags; CopySnapshot, CreateSnapshot and CreateVolume copy blocks.
- DeregisterImage keeps the snapshots unless DeleteAssociatedSnapshots; DeleteSnapshot of
  a snapshot that a registered AMI maps fails with InvalidSnapshot.InUse.
"""
from __future__ import annotations

import re
import time
from typing import Any

from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError, InvalidAMIIdError, InvalidSnapshotIdError
from moto.ec2.models import EC2Backend, ec2_backends
from moto.ec2.models.amis import Ami
from moto.ec2.responses import EC2Response
from moto.ec2.utils import random_ami_id

from pipeline_dev.emulator import timing
from pipeline_dev.emulator.blockstore import STORE

__all__ = ["install", "make_ami", "find_image"]

_NAME_RE = re.compile(r"^[A-Za-z0-9()\[\] ./\-'@_]{3,128}$")
_ARCHES = ("i386", "x86_64", "arm64", "x86_64_mac", "arm64_mac")
_BOOT_MODES = ("legacy-bios", "uefi", "uefi-preferred")
_VOLUME_TYPES = ("standard", "io1", "io2", "gp2", "sc1", "st1", "gp3")


def _err(code: str, message: str) -> EC2ClientError:
    return EC2ClientError(code, message)


def _bool(value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)


def _int(value: Any) -> int | None:
    return None if value in (None, "") else int(value)


def _tags_for(specs: list[dict[str, Any]] | None, resource_type: str,
              allowed: tuple[str, ...]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for spec in specs or []:
        rtype = spec.get("ResourceType")
        if rtype not in allowed:
            raise _err("InvalidParameterValue",
                       f"'{rtype}' is not a valid taggable resource type for this operation.")
        if rtype == resource_type:
            tags.update({t["Key"]: t.get("Value", "") for t in spec.get("Tags", [])})
    return tags


# --------------------------------------------------------------------------- model


def _bdm_property(self: Ami) -> list[dict[str, Any]]:
    bdm: list[dict[str, Any]] | None = getattr(self, "_bdm", None)
    if bdm is not None:
        return bdm
    return [{"DeviceName": self.root_device_name,
             "Ebs": {"SnapshotId": self.ebs_snapshot.id, "VolumeSize": 15,
                     "DeleteOnTermination": False, "VolumeType": "standard"}}]


_orig_filter = Ami.get_filter_value


def _ami_filter(self: Ami, filter_name: str, method_name: str | None = None) -> Any:
    ebs = [m for m in self.block_device_mappings if "Ebs" in m]
    if filter_name == "block-device-mapping.snapshot-id":
        return [m["Ebs"].get("SnapshotId") for m in ebs]
    if filter_name == "block-device-mapping.device-name":
        return [m["DeviceName"] for m in self.block_device_mappings]
    if filter_name == "block-device-mapping.volume-size":
        return [str(m["Ebs"].get("VolumeSize")) for m in ebs]
    if filter_name == "block-device-mapping.volume-type":
        return [m["Ebs"].get("VolumeType") for m in ebs]
    if filter_name == "block-device-mapping.delete-on-termination":
        return [str(m["Ebs"].get("DeleteOnTermination")).lower() for m in ebs]
    if filter_name == "root-device-name":
        return self.root_device_name
    if filter_name == "root-device-type":
        return self.root_device_type
    if filter_name == "ena-support":
        return str(bool(getattr(self, "ena_support", False))).lower()
    if filter_name == "image-type":
        return self.image_type
    if filter_name == "imds-support":
        return getattr(self, "imds_support", None)
    if filter_name == "boot-mode":
        return getattr(self, "boot_mode", None)
    return _orig_filter(self, filter_name, method_name)


def find_image(account: str, region: str, image_id: str) -> Ami:
    amis = ec2_backends[account][region].amis
    if image_id not in amis:
        raise InvalidAMIIdError(image_id)
    return amis[image_id]


def make_ami(ec2: Any, *, name: str, mappings: list[dict[str, Any]],
             root_device_name: str = "/dev/xvda", description: str | None = None,
             architecture: str = "x86_64", virtualization_type: str = "hvm",
             ena_support: bool | None = True, sriov_net_support: str | None = None,
             boot_mode: str | None = None, tpm_support: str | None = None,
             imds_support: str | None = None, owner_id: str | None = None,
             owner_alias: str | None = None, public: bool = False,
             tags: dict[str, str] | None = None, platform: str | None = None,
             source_instance_id: str | None = None, source_image: tuple[str, str] | None = None,
             image_location: str | None = None, ami_id: str | None = None) -> Ami:
    """Register an AMI in ``ec2`` (a region backend) with exactly these attributes."""
    ami_id = ami_id or random_ami_id()
    ami: Any = Ami(ec2, ami_id, name=name, description=description, owner_id=owner_id,
              owner_alias=owner_alias, public=public, virtualization_type=virtualization_type,
              architecture=architecture, root_device_type="ebs",
              root_device_name=root_device_name, platform=platform,
              image_location=image_location or f"{owner_id or ec2.account_id}/{name}",
              hypervisor="xen")
    # moto's Ami makes a placeholder snapshot; ours has real mappings instead.
    ec2.snapshots.pop(ami.ebs_snapshot.id, None)
    ami._bdm = mappings
    ami.sriov = sriov_net_support
    ami.sriov_net_support = sriov_net_support
    ami.ena_support = ena_support
    ami.boot_mode = boot_mode
    ami.tpm_support = tpm_support
    ami.imds_support = imds_support
    ami.instance_id = source_instance_id
    # moto's DescribeImageAttribute reads these names (its attribute map, typos included).
    ami.imds, ami.tmp, ami.uefi, ami.lld, ami.ramdisk = imds_support, tpm_support, None, None, None
    ami.platform_details = "Linux/UNIX" if platform is None else "Windows"
    ami.usage_operation = "RunInstances" if platform is None else "RunInstances:0002"
    if source_image:
        ami.source_image_id, ami.source_image_region = source_image
    if tags:
        ami.add_tags(tags)
    ec2.amis[ami_id] = ami
    return ami  # type: ignore[no-any-return]


def _check_name(ec2: Any, name: str | None) -> str:
    if not name or not _NAME_RE.match(name):
        raise _err("InvalidAMIName.Malformed",
                   f"AMI names must be between 3 and 128 characters long, and may contain "
                   f"letters, numbers, '(', ')', '.', '-', '/' and '_' (got {name!r})")
    for ami in ec2.amis.values():
        if ami.name == name and ami.owner_id == ec2.account_id:
            raise _err("InvalidAMIName.Duplicate",
                       f"AMI name {name} is already in use by AMI {ami.id}")
    return name


#: botocore model EbsBlockDevice.Iops / .VolumeSize / .Throughput (supported ranges)
_IOPS = {"gp3": (3000, 80000), "io1": (100, 64000), "io2": (100, 256000)}
_SIZES = {"gp2": (1, 16384), "gp3": (1, 65536), "io1": (4, 16384), "io2": (4, 65536),
          "st1": (125, 16384), "sc1": (125, 16384), "standard": (1, 1024)}
_THROUGHPUT = (125, 2000)


def _check_performance(vtype: str, size: int | None, iops: int | None,
                       throughput: int | None) -> None:
    """Volume size, IOPS and throughput within the model's ranges for the volume type."""
    low, high = _SIZES[vtype]
    if size is not None and not low <= size <= high:
        raise _err("InvalidParameterValue", f"Volume of {size}GiB is outside the {low}-{high} "
                   f"GiB supported for volume type {vtype}.")
    if iops is not None:
        if vtype not in _IOPS:
            raise _err("InvalidParameterCombination",
                       f"The parameter iops is not supported for {vtype} volumes.")
        low, high = _IOPS[vtype]
        if not low <= iops <= high:
            raise _err("InvalidParameterValue", f"Volume iops of {iops} is outside the "
                       f"{low}-{high} supported for volume type {vtype}.")
    elif vtype in ("io1", "io2"):
        raise _err("InvalidParameterCombination",
                   f"The parameter iops must be specified for {vtype} volumes.")
    if throughput is not None:
        if vtype != "gp3":
            raise _err("InvalidParameterCombination",
                       f"The parameter throughput is not supported for {vtype} volumes.")
        if not _THROUGHPUT[0] <= throughput <= _THROUGHPUT[1]:
            raise _err("InvalidParameterValue", f"Throughput of {throughput} MiB/s is outside "
                       f"the {_THROUGHPUT[0]}-{_THROUGHPUT[1]} supported for gp3.")


def _normalise_mappings(ec2: Any, raw: list[dict[str, Any]], *,
                        require_completed: bool = False) -> list[dict[str, Any]]:
    """Request mappings → stored mappings, checking snapshots and sizes like EC2 does."""
    out: list[dict[str, Any]] = []
    for m in raw:
        dev = m.get("DeviceName")
        if not dev:
            raise _err("InvalidBlockDeviceMapping", "A block device mapping needs a DeviceName.")
        if "NoDevice" in m:
            out.append({"DeviceName": dev, "NoDevice": ""})
            continue
        if m.get("VirtualName"):
            out.append({"DeviceName": dev, "VirtualName": m["VirtualName"]})
            continue
        ebs = dict(m.get("Ebs") or {})
        snap_id = ebs.get("SnapshotId")
        size = _int(ebs.get("VolumeSize"))
        if snap_id and ebs.get("Encrypted") is not None:
            # botocore model EbsBlockDevice.Encrypted: "If you are creating a block device
            # mapping from an existing encrypted or unencrypted snapshot, you must omit this
            # parameter"; the text is AWS's (hashicorp/terraform#1862).
            raise _err("InvalidParameter", "Parameter encrypted is invalid. You cannot specify "
                       "the encrypted flag if specifying a snapshot id in a block device mapping.")
        if snap_id:
            snap = ec2.snapshots.get(snap_id)
            if snap is None:
                raise _err("InvalidSnapshot.NotFound", f"The snapshot '{snap_id}' does not exist.")
            if require_completed and snap.status != "completed":
                raise _err("IncorrectState", f"Snapshot '{snap_id}' is not 'completed'.")
            if size is None:
                size = snap.volume_size
            elif size < snap.volume_size:
                raise _err("InvalidBlockDeviceMapping",
                           f"Volume of size {size}GB is smaller than snapshot '{snap_id}', "
                           f"expect size >= {snap.volume_size}GB")
        elif size is None:
            raise _err("InvalidBlockDeviceMapping",
                       f"Either snapshot ID or volume size must be provided for: {dev}")
        vtype = ebs.get("VolumeType") or "gp2"
        if vtype not in _VOLUME_TYPES:
            raise _err("InvalidParameterValue", f"Value ({vtype}) for parameter volumeType "
                       "is invalid.")
        _check_performance(vtype, size, _int(ebs.get("Iops")), _int(ebs.get("Throughput")))
        entry: dict[str, Any] = {
            "DeleteOnTermination": _bool(ebs.get("DeleteOnTermination")) is not False,
            "VolumeSize": size, "VolumeType": vtype,
            "Encrypted": bool(_bool(ebs.get("Encrypted"))) or bool(
                snap_id and ec2.snapshots[snap_id].encrypted),
        }
        if snap_id:
            entry["SnapshotId"] = snap_id
        for key in ("Iops", "Throughput"):
            if ebs.get(key) is not None:
                entry[key] = int(ebs[key])
        if ebs.get("KmsKeyId"):
            entry["KmsKeyId"] = ebs["KmsKeyId"]
        out.append({"DeviceName": dev, "Ebs": entry})
    return out


def _snapshot_users(ec2: Any, snapshot_id: str) -> list[str]:
    return [ami.id for ami in ec2.amis.values()
            if any(m.get("Ebs", {}).get("SnapshotId") == snapshot_id
                   for m in ami.block_device_mappings)]


# --------------------------------------------------------------------------- backend patches

_orig = {name: getattr(EC2Backend, name) for name in (
    "create_volume", "delete_volume", "create_snapshot", "copy_snapshot", "delete_snapshot",
    "run_instances")}


def _create_volume(self: Any, *args: Any, **kwargs: Any) -> Any:
    size, snap_id = (args[0] if args else kwargs.get("size")), kwargs.get("snapshot_id")
    if snap_id and size is not None and snap_id in self.snapshots and \
            int(size) < self.snapshots[snap_id].volume_size:
        need = self.snapshots[snap_id].volume_size
        raise _err("InvalidParameterValue",
                   f"Volume of {size}GiB is smaller than snapshot '{snap_id}', expect size >= "
                   f"{need}GiB")
    vol = _orig["create_volume"](self, *args, **kwargs)
    if vol.snapshot_id:
        STORE.copy(vol.snapshot_id, vol.id)
    else:
        STORE.ensure(vol.id)
    return vol


def _delete_volume(self: Any, volume_id: str) -> Any:
    vol = _orig["delete_volume"](self, volume_id)
    STORE.drop(volume_id)
    return vol


def _create_snapshot(self: Any, volume_id: str, *args: Any, **kwargs: Any) -> Any:
    from pipeline_dev.emulator import timing

    snap = _orig["create_snapshot"](self, volume_id, *args, **kwargs)
    STORE.copy(volume_id, snap.id)
    timing.snapshot_pending(snap)
    return snap


def _copy_snapshot(self: Any, source_snapshot_id: str, source_region: str, *args: Any,
                   **kwargs: Any) -> Any:
    from pipeline_dev.emulator import timing

    snap = _orig["copy_snapshot"](self, source_snapshot_id, source_region, *args, **kwargs)
    STORE.copy(source_snapshot_id, snap.id)
    timing.snapshot_pending(snap, timing.current().copy_seconds)
    return snap


def _delete_snapshot(self: Any, snapshot_id: str) -> Any:
    if snapshot_id not in self.snapshots:
        raise InvalidSnapshotIdError()
    users = _snapshot_users(self, snapshot_id)
    if users:
        raise _err("InvalidSnapshot.InUse",
                   f"The snapshot {snapshot_id} is currently in use by {users[0]}")
    snap = self.snapshots.pop(snapshot_id)
    STORE.drop(snapshot_id)
    return snap


def _merge_mappings(ami: Ami, request: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The AMI's mappings overlaid by the request's, by device name (as EC2 launches)."""
    merged: dict[str, dict[str, Any]] = {}
    for m in ami.block_device_mappings:
        if "Ebs" in m:
            merged[m["DeviceName"]] = {"DeviceName": m["DeviceName"], "Ebs": dict(m["Ebs"])}
    for m in request:
        dev = m["DeviceName"]
        if m.get("NoDevice") == "":
            merged.pop(dev, None)
            continue
        if not m.get("Ebs"):
            continue
        base = merged.get(dev, {"DeviceName": dev, "Ebs": {}})
        ebs = dict(base["Ebs"])
        ebs.update({k: v for k, v in m["Ebs"].items() if v is not None})
        snap_size = ami.ec2_backend.snapshots[ebs["SnapshotId"]].volume_size \
            if ebs.get("SnapshotId") in ami.ec2_backend.snapshots else None
        if ebs.get("VolumeSize") is not None:
            ebs["VolumeSize"] = int(ebs["VolumeSize"])
            if snap_size and ebs["VolumeSize"] < snap_size:
                raise _err("InvalidBlockDeviceMapping",
                           f"Volume of size {ebs['VolumeSize']}GB is smaller than snapshot "
                           f"'{ebs['SnapshotId']}', expect size >= {snap_size}GB")
        elif snap_size:
            ebs["VolumeSize"] = snap_size
        merged[dev] = {"DeviceName": dev, "Ebs": ebs}
    return list(merged.values())


def _resolve_ssm_image(ec2: Any, image_id: str) -> str:
    """``resolve:ssm:<name|ARN>[:version|:label]`` → the parameter's AMI id, at launch."""
    from moto.ssm.models import ssm_backends

    ref = image_id[len("resolve:ssm:"):]
    try:
        param = ssm_backends[ec2.account_id][ec2.region_name].get_parameter(ref)
    except Exception:  # noqa: BLE001 - moto's ParameterVersionNotFound and friends
        param = None
    if param is None:
        raise _err("InvalidParameterValue",
                   f"Failed to resolve the SSM parameter in ImageId {image_id!r}: the "
                   "parameter does not exist or you cannot access it.")
    return str(param.value)


def _check_architecture(ec2: Any, ami: Any, kwargs: dict[str, Any]) -> None:
    """EC2 refuses an instance type whose architectures do not include the AMI's."""
    from moto.ec2.models.instance_types import INSTANCE_TYPES

    itype = kwargs.get("instance_type")
    if kwargs.get("is_instance_type_default") and kwargs.get("launch_template"):
        itype = ec2._get_template_from_args(kwargs["launch_template"]).data.get(
            "InstanceType") or itype
    supported = (INSTANCE_TYPES.get(itype or "") or {}).get("ProcessorInfo", {}).get(
        "SupportedArchitectures")
    if supported and ami.architecture and ami.architecture not in supported:
        raise _err("InvalidParameterValue",
                   f"The architecture '{supported[0]}' of the specified instance type does not "
                   f"match the architecture '{ami.architecture}' of the specified AMI. Specify "
                   "an instance type and an AMI that have matching architectures, and try "
                   "again. You can use 'describe-instance-types' or 'describe-images' to "
                   "discover the architecture of the instance type or AMI.")


def _run_instances(self: Any, image_id: str, count: int, user_data: Any,
                   security_group_names: list[str], **kwargs: Any) -> Any:
    ami = None
    if not image_id and kwargs.get("launch_template"):
        # AWS launches the template's ImageId when the request gives none (moto does not).
        image_id = self._get_template_from_args(kwargs["launch_template"]).data.get("ImageId")
    if image_id and image_id.startswith("resolve:ssm:"):
        image_id = _resolve_ssm_image(self, image_id)
    if image_id:
        if image_id not in self.amis:
            raise _err("InvalidAMIID.NotFound", f"The image id '[{image_id}]' does not exist")
        ami = self.amis[image_id]
    if ami is not None:
        _check_architecture(self, ami, kwargs)
    if ami is not None and getattr(ami, "_bdm", None) is not None:
        request = kwargs.get("block_device_mappings")
        if request is None and kwargs.get("launch_template"):
            tmpl = self._get_template_from_args(kwargs["launch_template"])
            request = tmpl.data.get("BlockDeviceMappings")
        kwargs["block_device_mappings"] = _merge_mappings(ami, request or [])
    reservation = _orig["run_instances"](self, image_id, count, user_data,
                                         security_group_names, **kwargs)
    if ami is not None:
        from pipeline_dev.emulator.ami_features import record_launch

        record_launch(self, ami.id)
        for inst in reservation.instances:
            inst.ena_support = getattr(ami, "ena_support", None)
            inst.boot_mode = getattr(ami, "boot_mode", None)
            if getattr(ami, "imds_support", None) == "v2.0" and \
                    not (kwargs.get("metadata_options") or {}).get("HttpTokens"):
                # RegisterImage ImdsSupport v2.0: instances default to IMDSv2 required.
                inst.metadata_options.http_tokens = "required"
    return reservation


def _create_image_model(ec2: Any, instance_id: str, name: str, description: str | None,
                        request_maps: list[dict[str, Any]], specs: list[dict[str, Any]]) -> Ami:
    instance = ec2.get_instance(instance_id)
    _check_name(ec2, name)
    image_tags = _tags_for(specs, "image", ("image", "snapshot"))
    snap_tags = _tags_for(specs, "snapshot", ("image", "snapshot"))
    excluded = {m["DeviceName"] for m in request_maps if "NoDevice" in m}
    overrides = {m["DeviceName"]: m.get("Ebs") or {} for m in request_maps if "Ebs" in m}
    source = ec2.amis.get(instance.image_id)
    ami_id = random_ami_id()
    mappings: list[dict[str, Any]] = []
    for dev, bdt in sorted(instance.block_device_mapping.items()):
        if dev in excluded:
            continue
        vol = ec2.volumes[bdt.volume_id]
        snap = ec2.create_snapshot(vol.id, f"Created by CreateImage({instance_id}) for {ami_id}")
        snap.from_ami = None
        if snap_tags:
            snap.add_tags(snap_tags)
        over = overrides.get(dev, {})
        mappings.append({"DeviceName": dev, "Ebs": {
            "DeleteOnTermination": _bool(over.get("DeleteOnTermination"))
            if over.get("DeleteOnTermination") is not None else bool(bdt.delete_on_termination),
            "SnapshotId": snap.id,
            "VolumeSize": _int(over.get("VolumeSize")) or vol.size,
            "VolumeType": over.get("VolumeType") or vol.volume_type,
            "Encrypted": bool(vol.encrypted)}})
    for dev, over in overrides.items():  # new empty volumes added by the request
        if dev not in instance.block_device_mapping and dev not in excluded:
            mappings.extend(_normalise_mappings(ec2, [{"DeviceName": dev, "Ebs": over}]))
    ami = make_ami(
        ec2, name=name, description=description or None, mappings=mappings,
        root_device_name=instance.root_device_name,
        architecture=source.architecture if source else instance.architecture,
        virtualization_type=source.virtualization_type if source else "hvm",
        ena_support=getattr(source, "ena_support", True) if source else True,
        sriov_net_support=getattr(source, "sriov_net_support", None) if source else None,
        boot_mode=getattr(source, "boot_mode", None) if source else None,
        tpm_support=getattr(source, "tpm_support", None) if source else None,
        imds_support=getattr(source, "imds_support", None) if source else None,
        tags=image_tags, source_instance_id=instance_id, ami_id=ami_id,
        source_image=(source.id, ec2.region_name) if source else None)
    return ami


def _copy_image_model(ec2: Any, source_id: str, source_region: str, name: str,
                      description: str | None, copy_tags: bool,
                      specs: list[dict[str, Any]], encrypted: bool,
                      kms_key_id: str | None = None) -> Ami:
    src_backend = ec2_backends[ec2.account_id][source_region]
    src = src_backend.amis.get(source_id)
    if src is None:
        raise _err("InvalidAMIID.NotFound", f"The image id '[{source_id}]' does not exist")
    _check_name(ec2, name)  # AMI names are unique per account and Region, copies included
    image_tags = _tags_for(specs, "image", ("image", "snapshot"))
    snap_tags = _tags_for(specs, "snapshot", ("image", "snapshot"))
    from pipeline_dev.emulator.kms_keys import default_key_arn, resolve

    key = resolve(ec2.account_id, ec2.region_name, kms_key_id) if kms_key_id else None
    bad_key = bool(kms_key_id) and key is None   # AWS checks it later: the copy fails
    ami_id = random_ami_id()
    mappings = []
    for m in src.block_device_mappings:
        m = {"DeviceName": m["DeviceName"], **({"Ebs": dict(m["Ebs"])} if "Ebs" in m else
                                                {k: v for k, v in m.items() if k != "DeviceName"})}
        snap_id = m.get("Ebs", {}).get("SnapshotId")
        if snap_id and snap_id in src_backend.snapshots:
            src_snap = src_backend.snapshots[snap_id]
            snap = ec2.copy_snapshot(
                snap_id, source_region,
                f"Copied for DestinationAmi {ami_id} from SourceAmi {source_id} for "
                f"SourceSnapshot {snap_id}. Task created on {int(time.time() * 1000)}.", None)
            snap.encrypted = bool(encrypted or src_snap.encrypted)
            if snap.encrypted:
                snap.kms_key_id = key.arn if key is not None else kms_key_id if bad_key else (
                    getattr(src_snap, "kms_key_id", None) if src_snap.encrypted and
                    not encrypted else default_key_arn(ec2.account_id, ec2.region_name))
            if bad_key:
                snap.status = "error"
            if snap_tags:
                snap.add_tags(snap_tags)
            m["Ebs"]["SnapshotId"] = snap.id
            m["Ebs"]["Encrypted"] = snap.encrypted
        mappings.append(m)
    tags = {t["key"]: t["value"] for t in src.get_tags()} if copy_tags else {}
    tags.update(image_tags)
    ami = make_ami(
        ec2, name=name, description=description if description is not None else src.description,
        mappings=mappings, root_device_name=src.root_device_name,
        architecture=src.architecture or "x86_64",
        virtualization_type=src.virtualization_type or "hvm",
        ena_support=getattr(src, "ena_support", None),
        sriov_net_support=getattr(src, "sriov_net_support", None),
        boot_mode=getattr(src, "boot_mode", None), tpm_support=getattr(src, "tpm_support", None),
        imds_support=getattr(src, "imds_support", None), tags=tags, platform=src.platform,
        source_image=(source_id, source_region), ami_id=ami_id)
    if bad_key:
        ami.state = "failed"
        ami.state_reason = {"Code": "Client.InvalidKMSKey.InvalidState", "Message":
                            f"The KMS key {kms_key_id} does not exist in {ec2.region_name} "
                            "or is not enabled."}
    return ami


# --------------------------------------------------------------------------- responses


def _parse_block_device_mapping(self: Any) -> list[dict[str, Any]]:
    """RunInstances mappings as sent: unset fields stay unset so the AMI's values apply.

    (moto fills DeleteOnTermination=False and demands a size or snapshot per mapping,
    which breaks overriding only VolumeType/VolumeSize of an AMI device.)
    """
    out = []
    for m in self._get_param("BlockDeviceMappings", []):
        if "NoDevice" in m:
            out.append({"DeviceName": m.get("DeviceName"), "NoDevice": ""})
            continue
        ebs = {k: v for k, v in (m.get("Ebs") or {}).items() if v is not None}
        out.append({"DeviceName": m.get("DeviceName"), "VirtualName": m.get("VirtualName"),
                    "Ebs": ebs})
    return out



def _check_root(root: str, mappings: list[dict[str, Any]]) -> None:
    """The root device must be an EBS mapping with a snapshot (its disk, for /dev/sda1).

    An EBS-backed AMI boots from the snapshot of its root device (RegisterImage API page,
    "Register a snapshot of a root device volume"). AWS tolerates a root device that names
    a partition of a mapped disk (``/dev/sda1`` with ``/dev/sda`` mapped: the note in
    hashicorp/terraform#2271), so that is accepted too. The error texts are ours.
    """
    by_name = {m["DeviceName"]: m for m in mappings}
    entry = by_name.get(root) or by_name.get(re.sub(r"(?<=[a-z])\d+$", "", root))
    if entry is None:
        raise _err("InvalidBlockDeviceMapping",
                   f"The root device name {root} is not in the block device mapping.")
    if not (entry.get("Ebs") or {}).get("SnapshotId"):
        raise _err("InvalidBlockDeviceMapping",
                   f"The root device {root} must map an EBS snapshot (SnapshotId).")


def register_image(self: Any) -> ActionResult:
    self.error_on_dryrun()
    ec2 = self.ec2_backend
    name = _check_name(ec2, self._get_param("Name"))
    arch = self._get_param("Architecture") or "i386"
    if arch not in _ARCHES:
        raise _err("InvalidParameterValue",
                   f"Value ({arch}) for parameter architecture is invalid.")
    boot_mode = self._get_param("BootMode")
    if boot_mode is not None and boot_mode not in _BOOT_MODES:
        raise _err("InvalidParameterValue",
                   f"Value ({boot_mode}) for parameter bootMode is invalid.")
    imds = self._get_param("ImdsSupport")
    if imds is not None and imds != "v2.0":
        raise _err("InvalidParameterValue", f"Value ({imds}) for parameter imdsSupport is invalid.")
    vtype = self._get_param("VirtualizationType") or "paravirtual"
    if vtype not in ("hvm", "paravirtual"):
        raise _err("InvalidParameterValue",
                   f"Value ({vtype}) for parameter virtualizationType is invalid.")
    raw_maps = self._get_param("BlockDeviceMappings") or []
    mappings = _normalise_mappings(ec2, raw_maps, require_completed=True)
    root = self._get_param("RootDeviceName") or "/dev/sda1"
    if mappings:
        _check_root(root, mappings)
    tags = _tags_for(self._get_param("TagSpecifications"), "image", ("image",))
    if not mappings and not self._get_param("ImageLocation"):
        # Deviation (DEVIATIONS.md): AWS requires a root snapshot or an ImageLocation; we
        # keep moto's placeholder so old callers still work.
        ami = ec2.register_image(name, self._get_param("Description"))
        ami.architecture, ami.virtualization_type = arch, vtype
        ami.boot_mode = boot_mode
        ami.imds_support = ami.imds = imds
        ami.ena_support = _bool(self._get_param("EnaSupport"))
        if tags:
            ami.add_tags(tags)
        timing.ami_pending(ami)
        return ActionResult({"ImageId": ami.id})
    ami = make_ami(
        ec2, name=name, description=self._get_param("Description"), mappings=mappings,
        root_device_name=root, architecture=arch, virtualization_type=vtype,
        ena_support=_bool(self._get_param("EnaSupport")),
        sriov_net_support=self._get_param("SriovNetSupport"), boot_mode=boot_mode,
        tpm_support=self._get_param("TpmSupport"), imds_support=imds, tags=tags,
        image_location=self._get_param("ImageLocation"))
    timing.ami_pending(ami)
    return ActionResult({"ImageId": ami.id})


def create_image(self: Any) -> ActionResult:
    self.error_on_dryrun()
    ami = _create_image_model(
        self.ec2_backend, self._get_param("InstanceId"), self._get_param("Name"),
        self._get_param("Description"), self._get_param("BlockDeviceMappings") or [],
        self._get_param("TagSpecifications") or [])
    timing.ami_pending(ami)
    return ActionResult({"ImageId": ami.id})


def copy_image(self: Any) -> ActionResult:
    self.error_on_dryrun()
    # ClientToken makes CopyImage idempotent (botocore fills one in per call).
    from pipeline_dev.emulator.vmimport import request_fingerprint

    tokens = self.ec2_backend.__dict__.setdefault("_copy_image_tokens", {})
    token = self._get_param("ClientToken")
    fingerprint = request_fingerprint(self)
    if token and token in tokens and tokens[token][1] in self.ec2_backend.amis:
        if tokens[token][0] != fingerprint:
            raise _err("IdempotentParameterMismatch",
                       f"The client token {token} was already used with different parameters.")
        return ActionResult({"ImageId": tokens[token][1]})
    from pipeline_dev.emulator.kms_keys import check_copy_parameters

    kms = self._get_param("KmsKeyId")
    encrypted = check_copy_parameters(self._get_param("Encrypted"), kms)
    ami = _copy_image_model(
        self.ec2_backend, self._get_param("SourceImageId"), self._get_param("SourceRegion"),
        self._get_param("Name"), self._get_param("Description"),
        bool(_bool(self._get_param("CopyImageTags"))),
        self._get_param("TagSpecifications") or [], encrypted, kms)
    if token:
        tokens[token] = (fingerprint, ami.id)
    timing.ami_pending(ami, copy=True)
    return ActionResult({"ImageId": ami.id})


def deregister_image(self: Any) -> ActionResult:
    self.error_on_dryrun()
    ec2 = self.ec2_backend
    ami_id = self._get_param("ImageId")
    ami = ec2.amis.get(ami_id)
    snaps = [m["Ebs"]["SnapshotId"] for m in (ami.block_device_mappings if ami else [])
             if m.get("Ebs", {}).get("SnapshotId")]
    if ami is not None:
        from pipeline_dev.emulator.ami_features import refuse_deregistration

        refuse_deregistration(ami)
    ec2.deregister_image(ami_id)
    result: dict[str, Any] = {"Return": True}
    if _bool(self._get_param("DeleteAssociatedSnapshots")):
        # botocore model DeleteSnapshotReturnCode {SnapshotId, ReturnCode}: success |
        # skipped ("associated with other AMIs") | missing-permissions | internal-error |
        # client-error.
        statuses = []
        for sid in snaps:
            if _snapshot_users(ec2, sid):
                statuses.append({"SnapshotId": sid, "ReturnCode": "skipped"})
                continue
            try:
                ec2.delete_snapshot(sid)
                statuses.append({"SnapshotId": sid, "ReturnCode": "success"})
            except EC2ClientError:
                statuses.append({"SnapshotId": sid, "ReturnCode": "client-error"})
        result["DeleteSnapshotResults"] = statuses
    return ActionResult(result)


_orig_describe_snapshots = EC2Response.describe_snapshots


def describe_snapshots(self: Any) -> ActionResult:
    """moto ignores OwnerIds; AWS lists only those owners' snapshots (``self`` = caller)."""
    result = _orig_describe_snapshots(self)
    owners = self._get_param("OwnerIds", []) or []
    if not owners:
        return result
    data: dict[str, Any] = dict(result.result)  # type: ignore[call-overload]
    wanted = {self.current_account if o == "self" else o for o in owners}
    snaps = [s for s in data["Snapshots"]
             if s.owner_id in wanted or ("amazon" in wanted and s.owner_id != self.current_account
                                         and s.owner_id == "602401143452")]
    return ActionResult({**data, "Snapshots": snaps})


def install() -> None:
    """Patch moto's AMI/EBS/instance models and handlers (idempotent assignments)."""
    Ami.block_device_mappings = property(_bdm_property)  # type: ignore[method-assign,assignment]
    Ami.get_filter_value = _ami_filter  # type: ignore[method-assign]
    EC2Backend.create_volume = _create_volume  # type: ignore[method-assign]
    EC2Backend.delete_volume = _delete_volume  # type: ignore[method-assign]
    EC2Backend.create_snapshot = _create_snapshot  # type: ignore[method-assign]
    EC2Backend.copy_snapshot = _copy_snapshot  # type: ignore[method-assign]
    EC2Backend.delete_snapshot = _delete_snapshot  # type: ignore[method-assign]
    EC2Backend.run_instances = _run_instances  # type: ignore[method-assign]
    EC2Response._parse_block_device_mapping = (  # type: ignore[method-assign]
        _parse_block_device_mapping)
    for fn in (register_image, create_image, copy_image, deregister_image, describe_snapshots):
        setattr(EC2Response, fn.__name__, fn)
