"""An IPv6 service CIDR in the config: check-config validates the CIDR/DNS pair, and both user
data mechanisms carry the IPv6 values."""
from __future__ import annotations

import pytest

from pipeline.core.config import parse_settings
from pipeline.core.errors import ConfigError
from pipeline.publish import user_data as ud

from test_publish_support import example_raw


def _settings(tmp_path, **cluster):
    raw = example_raw(tmp_path)
    raw["cluster"].update(cluster)
    return parse_settings(raw, source=tmp_path / "pipeline.yaml")


def test_ipv6_service_cidr_is_accepted_and_dns_defaults_to_its_a_address(tmp_path):
    s = _settings(tmp_path, service_cidr="fd7e:1234:5678::/108")
    assert s.cluster.cluster_dns_ip == "fd7e:1234:5678::a"
    assert "--ip-family ipv6" in ud.render(s, ud.BOOTSTRAP_SH, "script")
    assert "cidr: fd7e:1234:5678::/108" in ud.render(s, ud.NODEADM, "mime")


@pytest.mark.parametrize("cidr, dns, expect", [
    ("fd7e:1234:5678::/108", "10.100.0.10", "is IPv4 but service_cidr fd7e:1234:5678::/108 is IPv6"),
    ("10.100.0.0/16", "fd7e:1234:5678::a", "is IPv6 but service_cidr 10.100.0.0/16 is IPv4"),
    ("fd7e:1234:5678::/108", "fd00::a", "expected an address inside service_cidr"),
])
def test_check_config_refuses_a_mismatched_pair(tmp_path, cidr, dns, expect):
    with pytest.raises(ConfigError) as err:
        _settings(tmp_path, service_cidr=cidr, dns_cluster_ip=dns)
    assert any(expect in p for p in [str(err.value), *err.value.problems]), err.value.problems


def test_explicit_ipv6_dns_inside_the_cidr_passes(tmp_path):
    s = _settings(tmp_path, service_cidr="fd7e:1234:5678::/108", dns_cluster_ip="fd7e:1234:5678::53")
    assert s.cluster.cluster_dns_ip == "fd7e:1234:5678::53"
    text = ud.render(s, ud.BOOTSTRAP_SH, "script")
    assert "--dns-cluster-ip fd7e:1234:5678::53" in text
    assert ud.lint(text, mechanism=ud.BOOTSTRAP_SH, cluster=s.cluster) == []
