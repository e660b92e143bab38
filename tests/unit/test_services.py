"""features/services.py without servers: what a machine without RabbitMQ or Redis is told."""

import pytest

from features import services


@pytest.fixture
def nothing_installed(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no epmd, redis-server or apt-get
    monkeypatch.setattr(services, "RABBITMQ_BIN", tmp_path / "rabbitmq" / "bin")


def test_missing_binaries_name_the_debian_packages(nothing_installed, monkeypatch):
    monkeypatch.setattr(services.os, "geteuid", lambda: 0)  # root, but no apt-get
    assert services.missing_packages() == ["rabbitmq-server", "redis-server"]
    with pytest.raises(RuntimeError, match="apt-get install -y rabbitmq-server redis-server"):
        services.ensure_installed()


def test_a_broker_does_not_start_without_its_package(nothing_installed, tmp_path):
    with pytest.raises(RuntimeError, match="rabbitmq-server"):
        with services.Broker(tmp_path / "broker", port=5672):
            pass
    assert not (tmp_path / "broker").exists()


def test_free_ports_are_distinct():
    ports = services.free_ports(3)
    assert len(set(ports)) == 3 and all(0 < p < 65536 for p in ports)
