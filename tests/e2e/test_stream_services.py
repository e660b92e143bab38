"""The event stream's services start by themselves (features/services.py): a real RabbitMQ keeps a
durable queue's persistent message across a restart, Redis answers, and nothing is left running."""

import json
import socket
import subprocess

from features.services import Broker, Redis

# pika lives in the features environment, so the AMQP side runs there, one process per step.
PIKA = """
import json, sys
import pika

url, action = sys.argv[1], sys.argv[2]
connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
channel.queue_declare("smoke.durable", durable=True)
if action == "publish":
    channel.confirm_delivery()
    channel.basic_publish("", "smoke.durable", b"hello", pika.BasicProperties(delivery_mode=2))
    print(json.dumps({"published": 1}))
else:
    method, properties, body = channel.basic_get("smoke.durable", auto_ack=True)
    print(json.dumps({"body": body.decode() if body else None}))
connection.close()
"""


def _pika(python, url: str, action: str) -> dict:
    done = subprocess.run(
        [str(python), "-c", PIKA, url, action],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _queues(broker) -> dict[str, str]:
    out = broker.ctl("list_queues", "--no-table-headers", "name", "messages")
    return dict(line.split("\t") for line in out.strip().splitlines() if line)


def test_a_durable_queue_and_its_persistent_message_survive_a_broker_restart(
    stream_services, features_py
):
    broker = stream_services.broker
    assert broker.url == f"amqp://guest:guest@127.0.0.1:{broker.port}/%2F"
    assert _pika(features_py, broker.url, "publish") == {"published": 1}
    assert _queues(broker) == {"smoke.durable": "1"}

    broker.restart()
    assert broker.startup_s is not None and broker.startup_s < 60, broker.startup_s
    assert _queues(broker) == {"smoke.durable": "1"}
    assert _pika(features_py, broker.url, "get") == {"body": "hello"}
    assert _queues(broker) == {"smoke.durable": "0"}


def test_redis_answers_on_loopback_and_keeps_nothing_on_disk(stream_services):
    redis = stream_services.redis
    assert redis.address == f"127.0.0.1:{redis.port}"
    assert redis.command("PING") == "PONG"
    assert redis.command("SET", "smoke", "1") == "OK"
    assert redis.command("GET", "smoke") == "1"
    assert redis.command("GET", "absent") is None
    assert redis.command("CONFIG", "GET", "save") == ["save", ""]
    assert not list(redis.root.glob("*.rdb"))


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def test_stopping_leaves_no_process_or_port_behind(tmp_path):
    with Broker(tmp_path / "rabbitmq") as broker, Redis(tmp_path / "redis") as redis:
        ports = [broker.port, broker.dist_port, broker.epmd_port, redis.port]
        assert all(_answers(p) for p in ports), ports
        # The Erlang VM (a child of the package's wrapper script) names its folder.
        assert subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True).stdout
    left = subprocess.run(["pgrep", "-a", "-f", str(tmp_path)], capture_output=True, text=True)
    assert left.stdout == "", left.stdout
    assert not any(_answers(p) for p in ports), ports
