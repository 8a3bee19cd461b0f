"""EBS direct APIs against the emulator, over HTTP with plain boto3 clients.

Sources: EBS direct API reference (https://docs.aws.amazon.com/ebs/latest/APIReference/),
the botocore ``ebs/2019-11-02`` model, AWS-FACTS §2 (coldsnap's LINEAR aggregate).
"""
from __future__ import annotations

import base64
import hashlib

import pytest
from botocore.exceptions import ClientError

BS = 524288


def _ck(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _linear(blocks: list[bytes]) -> str:
    # AWS-FACTS §2: base64(sha256(raw 32-byte digests concatenated in ascending index)).
    return base64.b64encode(hashlib.sha256(b"".join(
        hashlib.sha256(b).digest() for b in blocks)).digest()).decode()


def _put(ebs, sid: str, index: int, data: bytes, **over):
    kw = dict(SnapshotId=sid, BlockIndex=index, BlockData=data, DataLength=BS,
              Checksum=_ck(data), ChecksumAlgorithm="SHA256")
    kw.update(over)
    return ebs.put_snapshot_block(**kw)


def _code(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    r = exc.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture
def ebs(clients):
    return clients.client("ebs")


@pytest.fixture
def ec2(clients):
    return clients.client("ec2")


def test_start_snapshot_block_size_and_pending_ec2_snapshot(ebs, ec2):
    # API_StartSnapshot: BlockSize is the size of the blocks, 512 KiB; the EC2 snapshot
    # is pending until CompleteSnapshot.
    snap = ebs.start_snapshot(VolumeSize=2, Description="d", Timeout=10)
    assert snap["BlockSize"] == BS
    assert snap["Status"] == "pending" and snap["VolumeSize"] == 2
    desc = ec2.describe_snapshots(SnapshotIds=[snap["SnapshotId"]])["Snapshots"][0]
    assert desc["State"] == "pending" and desc["VolumeSize"] == 2


def test_full_upload_roundtrip_with_linear_checksum(ebs, ec2):
    sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    blocks = {5: b"\x05" * BS, 1: bytes(range(256)) * (BS // 256)}
    for i, d in blocks.items():
        resp = _put(ebs, sid, i, d)
        # API_PutSnapshotBlock: the response echoes the checksum and algorithm.
        assert resp["Checksum"] == _ck(d) and resp["ChecksumAlgorithm"] == "SHA256"
    done = ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=2,
                                 Checksum=_linear([blocks[1], blocks[5]]),
                                 ChecksumAlgorithm="SHA256",
                                 ChecksumAggregationMethod="LINEAR")
    assert done["Status"] == "completed"
    assert ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["State"] == "completed"
    listed = ebs.list_snapshot_blocks(SnapshotId=sid)
    assert [b["BlockIndex"] for b in listed["Blocks"]] == [1, 5]  # index order, written only
    assert listed["BlockSize"] == BS and listed["VolumeSize"] == 1
    for b in listed["Blocks"]:
        got = ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=b["BlockIndex"],
                                     BlockToken=b["BlockToken"])
        data = got["BlockData"].read()
        assert data == blocks[b["BlockIndex"]]
        assert got["DataLength"] == BS and got["Checksum"] == _ck(data)
        assert got["ChecksumAlgorithm"] == "SHA256"


def test_bad_checksum_and_data_length_are_rejected(ebs):
    sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    data = b"\x01" * BS
    with pytest.raises(ClientError) as exc:
        _put(ebs, sid, 0, data, Checksum=_ck(b"other"))
    assert _code(exc) == ("ValidationException", 400)
    # API_PutSnapshotBlock DataLength: "The only supported size is 524288 bytes".
    with pytest.raises(ClientError) as exc:
        _put(ebs, sid, 0, b"\x01" * 512, DataLength=512, Checksum=_ck(b"\x01" * 512))
    assert _code(exc) == ("ValidationException", 400)
    with pytest.raises(ClientError) as exc:  # index beyond a 1 GiB volume (2048 blocks)
        _put(ebs, sid, 2048, data)
    assert _code(exc) == ("ValidationException", 400)


def test_complete_checks_count_and_aggregate(ebs):
    sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    a, b = b"\x0a" * BS, b"\x0b" * BS
    _put(ebs, sid, 0, a)
    _put(ebs, sid, 7, b)
    with pytest.raises(ClientError) as exc:
        ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=3)
    assert _code(exc)[0] == "ValidationException"
    # Aggregate over base64 strings (not raw digests) is not the LINEAR checksum.
    wrong = base64.b64encode(hashlib.sha256((_ck(a) + _ck(b)).encode()).digest()).decode()
    with pytest.raises(ClientError) as exc:
        ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=2, Checksum=wrong,
                              ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
    assert _code(exc)[0] == "ValidationException"
    ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=2, Checksum=_linear([a, b]),
                          ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")


def test_no_writes_after_completion_and_no_reads_before(ebs):
    sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    _put(ebs, sid, 0, b"\x01" * BS)
    # ListSnapshotBlocks works on completed snapshots only (ebsapi FAQ).
    with pytest.raises(ClientError) as exc:
        ebs.list_snapshot_blocks(SnapshotId=sid)
    assert _code(exc)[0] == "ValidationException"
    ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=1)
    with pytest.raises(ClientError) as exc:
        _put(ebs, sid, 1, b"\x02" * BS)
    assert _code(exc) == ("ValidationException", 400)
    with pytest.raises(ClientError) as exc:
        ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=1)
    assert _code(exc)[0] == "ValidationException"


def test_unknown_snapshot_is_resource_not_found_404(ebs):
    # botocore model: ResourceNotFoundException has httpStatusCode 404.
    for call in (lambda: ebs.list_snapshot_blocks(SnapshotId="snap-0123456789abcdef0"),
                 lambda: _put(ebs, "snap-0123456789abcdef0", 0, b"\x01" * BS),
                 lambda: ebs.complete_snapshot(SnapshotId="snap-0123456789abcdef0",
                                               ChangedBlocksCount=0)):
        with pytest.raises(ClientError) as exc:
            call()
        assert _code(exc) == ("ResourceNotFoundException", 404)
        assert exc.value.response.get("Reason") == "SNAPSHOT_NOT_FOUND"  # the model's member


def test_block_token_required_and_bound_to_snapshot(ebs):
    sids = []
    for fill in (b"\x01", b"\x02"):
        sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
        _put(ebs, sid, 0, fill * BS)
        ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=1)
        sids.append(sid)
    tok_a = ebs.list_snapshot_blocks(SnapshotId=sids[0])["Blocks"][0]["BlockToken"]
    with pytest.raises(ClientError) as exc:
        ebs.get_snapshot_block(SnapshotId=sids[1], BlockIndex=0, BlockToken=tok_a)
    assert _code(exc)[0] == "ValidationException"
    with pytest.raises(ClientError) as exc:
        ebs.get_snapshot_block(SnapshotId=sids[0], BlockIndex=0, BlockToken="bogus")
    assert _code(exc)[0] == "ValidationException"


def test_list_paging_and_starting_index(ebs):
    sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    written = list(range(0, 130))
    for i in written:
        _put(ebs, sid, i, i.to_bytes(2, "big") * (BS // 2))
    ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=len(written))
    seen, token = [], None
    while True:
        kw = {"NextToken": token} if token else {}
        page = ebs.list_snapshot_blocks(SnapshotId=sid, MaxResults=100, **kw)
        assert len(page["Blocks"]) <= 100
        seen += [b["BlockIndex"] for b in page["Blocks"]]
        token = page.get("NextToken")
        if not token:
            break
    assert seen == written
    start = ebs.list_snapshot_blocks(SnapshotId=sid, StartingBlockIndex=120)
    assert [b["BlockIndex"] for b in start["Blocks"]] == list(range(120, 130))


def test_client_token_and_parent_snapshot(ebs):
    first = ebs.start_snapshot(VolumeSize=1, ClientToken="tok-1")
    again = ebs.start_snapshot(VolumeSize=1, ClientToken="tok-1")
    assert again["SnapshotId"] == first["SnapshotId"]
    # botocore model: ConflictException = same client token, non-identical request (409).
    with pytest.raises(ClientError) as exc:
        ebs.start_snapshot(VolumeSize=2, ClientToken="tok-1")
    assert _code(exc) == ("ConflictException", 409)
    sid = first["SnapshotId"]
    _put(ebs, sid, 3, b"\x03" * BS)
    ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=1)
    child = ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=sid)["SnapshotId"]
    _put(ebs, child, 4, b"\x04" * BS)
    ebs.complete_snapshot(SnapshotId=child, ChangedBlocksCount=1)  # only blocks written now
    listed = ebs.list_snapshot_blocks(SnapshotId=child)["Blocks"]
    assert [b["BlockIndex"] for b in listed] == [3, 4]


def test_list_changed_blocks_between_snapshots(ebs):
    # API_ListChangedBlocks: blocks that differ between two snapshots of the same lineage.
    parent = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    for i in (0, 1, 2):
        _put(ebs, parent, i, bytes([i + 1]) * BS)
    ebs.complete_snapshot(SnapshotId=parent, ChangedBlocksCount=3)
    child = ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=parent)["SnapshotId"]
    _put(ebs, child, 1, b"\xee" * BS)
    _put(ebs, child, 5, b"\xff" * BS)
    ebs.complete_snapshot(SnapshotId=child, ChangedBlocksCount=2)
    changed = ebs.list_changed_blocks(FirstSnapshotId=parent, SecondSnapshotId=child)
    assert [b["BlockIndex"] for b in changed["ChangedBlocks"]] == [1, 5]
    block = changed["ChangedBlocks"][0]
    got = ebs.get_snapshot_block(SnapshotId=child, BlockIndex=1,
                                 BlockToken=block["SecondBlockToken"])["BlockData"].read()
    assert got == b"\xee" * BS


def test_parallel_uploads_like_coldsnap(ebs):
    # AWS-FACTS §2: coldsnap writes blocks with many concurrent workers.
    from concurrent.futures import ThreadPoolExecutor

    sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    blocks = {i: bytes([i % 251 + 1]) * BS for i in range(48)}
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: _put(ebs, sid, i, blocks[i]), blocks))
    ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=48,
                          Checksum=_linear([blocks[i] for i in sorted(blocks)]),
                          ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
    assert len(ebs.list_snapshot_blocks(SnapshotId=sid)["Blocks"]) == 48


def test_list_changed_blocks_refuses_unrelated_snapshots(ebs):
    """botocore ebs model ValidationExceptionReason UNRELATED_SNAPSHOTS: ListChangedBlocks
    compares snapshots of one volume or lineage."""
    snaps = []
    for fill in (b"\x01", b"\x02"):
        sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
        _put(ebs, sid, 0, fill * BS)
        ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=1)
        snaps.append(sid)
    one, other = snaps
    with pytest.raises(ClientError) as exc:
        ebs.list_changed_blocks(FirstSnapshotId=one, SecondSnapshotId=other)
    assert exc.value.response["Error"]["Code"] == "ValidationException"
    assert exc.value.response["Reason"] == "UNRELATED_SNAPSHOTS"
