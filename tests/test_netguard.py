"""The private-network guard's address rule (pure): which addresses server-side fetches may reach."""

from __future__ import annotations

import pytest

from responsa.netguard import Guard, is_blocked, parse_network

# Private, loopback, link-local (cloud metadata) and shared addresses, and the IPv6 forms that
# carry them: a NAT64 gateway, a 6to4 relay or a host's own stack reaches the IPv4 address inside.
NOT_PUBLIC = [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
    "224.0.0.1", "::1", "::", "fe80::1", "fe80::1%eth0", "fc00::1", "fd12:3456::1", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254",  # IPv4-mapped
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::10.0.0.1",  # NAT64 (RFC 6052)
    "64:ff9b:1::808:808",  # local-use NAT64 (RFC 8215): the operator's own network
    "2002:7f00:1::", "2002:a9fe:a9fe::1", "2002:c0a8:101::5",  # 6to4 of 127.0.0.1, 169.254.169.254, 192.168.1.1
    "::127.0.0.1", "::169.254.169.254", "::10.0.0.1",  # IPv4-compatible (deprecated)
    "::ffff:0:127.0.0.1", "::ffff:0:a9fe:a9fe", "::ffff:0:192.168.0.1",  # IPv4-translated (RFC 2765)
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "2a00:1450:4001:81c::200e", "::ffff:8.8.8.8",
          "64:ff9b::808:808", "2002:808:808::1", "::ffff:0:8.8.8.8"]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_not_public_addresses_are_blocked(address: str) -> None:
    assert is_blocked(address)
    assert not Guard().permits(address)
    assert Guard(allow_private=True).permits(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert not is_blocked(address)
    assert Guard().permits(address)


def test_allowed_networks_open_only_themselves() -> None:
    guard = Guard(allowed=["10.0.0.0/8", "127.0.0.2/32", "fd00::/8"])
    assert guard.permits("10.200.0.1") and guard.permits("127.0.0.2") and guard.permits("fd12::1")
    # The same hosts through IPv6 forms that reach them.
    assert guard.permits("::ffff:10.0.0.1") and guard.permits("64:ff9b::10.0.0.1")
    assert not guard.permits("127.0.0.1") and not guard.permits("169.254.169.254")
    assert not guard.permits("64:ff9b::a9fe:a9fe") and not guard.permits("::1")
    assert guard.permits("8.8.8.8")


@pytest.mark.parametrize(("text", "network"), [("10.0.0.0/8", "10.0.0.0/8"), ("10.1.2.3", "10.1.2.3/32"),
                                               (" 10.1.2.3/8 ", "10.0.0.0/8"), ("fd00::/8", "fd00::/8"),
                                               ("::1", "::1/128")])
def test_parse_network(text: str, network: str) -> None:
    assert parse_network(text) == network


@pytest.mark.parametrize("text", ["", "10.0.0.300", "example.com", "10.0.0.0/33"])
def test_parse_network_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="is not an IP address or CIDR network"):
        parse_network(text)
