"""The compose stack's shape, read from docker/compose.yaml and docker/nginx.conf: several store
server workers behind nginx with sticky sessions and websocket upgrades, one message queue for
all of them, healthchecks, and nobody but nginx reachable from outside. There is no Docker
engine here, so the files are checked, and handed to docker-compose and nginx when installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # PyYAML: installed with schemathesis; reads compose's anchors and merge keys

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker" / "compose.yaml"
NGINX = REPO / "docker" / "nginx.conf"

Block = list[tuple[str, list[str], Any]]  # (directive, arguments, child block or None)


def parse_nginx(text: str) -> Block:
    """nginx configuration as nested (directive, args, block) entries."""
    tokens = re.findall(r'"[^"]*"|\'[^\']*\'|[{};]|[^\s{};]+', re.sub(r"#[^\n]*", "", text))
    pos = 0

    def block() -> Block:
        nonlocal pos
        out: Block = []
        words: list[str] = []
        while pos < len(tokens):
            tok = tokens[pos]
            pos += 1
            if tok == ";":
                out.append((words[0], words[1:], None))
                words = []
            elif tok == "{":
                out.append((words[0], words[1:], block()))
                words = []
            elif tok == "}":
                return out
            else:
                words.append(tok.strip("\"'"))
        assert not words, f"unterminated directive {words}"
        return out

    return block()


def find(block: Block, name: str, *args: str) -> list[tuple[list[str], Any]]:
    """Entries of one directive in a block (whose first arguments match, if given)."""
    return [(a, b) for d, a, b in block if d == name and a[: len(args)] == list(args)]


def one(block: Block, name: str, *args: str) -> tuple[list[str], Any]:
    """The only such entry."""
    hits = find(block, name, *args)
    assert len(hits) == 1, f"expected one {name} {args}, found {len(hits)}"
    return hits[0]


def seconds(value: str) -> float:
    """An nginx time ('3600s', '1h', '90') in seconds."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value)
    assert m, value
    return (
        int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}[m.group(2)]
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker/compose.yaml, anchors resolved."""
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def nginx() -> Block:
    """The http block of docker/nginx.conf."""
    return one(parse_nginx(NGINX.read_text()), "http")[1]


def store_workers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services that run the web process (serve.py)."""
    return {
        name: svc
        for name, svc in compose["services"].items()
        if svc.get("command") == ["python", "serve.py"]
    }


def test_nginx_balances_at_least_two_workers_with_sticky_sessions(compose, nginx) -> None:
    upstream = one(nginx, "upstream", "store")[1]
    sticky = find(upstream, "ip_hash") + find(upstream, "hash", "$remote_addr", "consistent")
    assert sticky, "Socket.IO long-polling needs every request of a client on one worker"
    servers = [a[0].rsplit(":", 1) for a, _ in find(upstream, "server")]
    assert len(servers) >= 2
    workers = store_workers(compose)
    # Every upstream entry is a worker service on its port, and every worker is in the upstream.
    assert {host for host, _ in servers} == set(workers)
    assert all(port == "8000" for _, port in servers)


def test_websockets_are_upgraded_and_kept_open(nginx) -> None:
    server = one(nginx, "server")[1]
    sio = one(server, "location", "/socket.io/")[1]

    def directive(name: str, *args: str) -> list[str]:
        # proxy_* directives set in the location win; otherwise the server's are inherited.
        hits = find(sio, name, *args) or find(server, name, *args)
        assert hits, f"{name} {args} missing for /socket.io/"
        return hits[0][0]

    assert directive("proxy_pass") == ["http://store"]
    assert directive("proxy_http_version") == ["1.1"]
    assert directive("proxy_set_header", "Upgrade") == ["Upgrade", "$http_upgrade"]
    connection = directive("proxy_set_header", "Connection")[1]
    if connection.startswith("$"):  # a map from $http_upgrade: "upgrade" whenever one is asked
        source, table = one(nginx, "map", "$http_upgrade", connection)
        assert ("default", ["upgrade"], None) in table, source
    else:
        assert connection.lower() == "upgrade"
    # Engine.IO pings every 25 s and waits 20 s: anything shorter cuts idle devices off.
    assert seconds(directive("proxy_read_timeout")[0]) >= 60
    assert directive("proxy_buffering") == ["off"]


def test_the_workers_see_the_host_with_its_port(nginx) -> None:
    # Browsers send Origin: http://host:8000; the workers compare it with Host, which $host would
    # hand them without the port, refusing every opt-in form and every live portal page.
    server = one(nginx, "server")[1]
    headers = {args[0]: args[1] for name, args, _ in server if name == "proxy_set_header"}
    assert headers["Host"] == "$http_host"


def test_every_worker_shares_one_message_queue_and_one_redis(compose) -> None:
    workers = store_workers(compose)
    assert len(workers) >= 2
    envs = [svc["environment"] for svc in workers.values()] + [
        compose["services"]["jobs"]["environment"]
    ]
    queues = {env.get("SOCKETIO_MESSAGE_QUEUE") for env in envs}
    assert len(queues) == 1 and None not in queues and "" not in queues
    assert len({env["REDIS_URL"] for env in envs}) == 1
    assert len({env["DATABASE_URL"] for env in envs}) == 1
    # Workers trust nginx as one hop, so throttles see clients rather than the proxy.
    assert all(str(env.get("PROXY_HOPS")) == "1" for env in envs)


def test_only_nginx_publishes_a_port(compose) -> None:
    published = {name for name, svc in compose["services"].items() if svc.get("ports")}
    assert published == {"nginx"}
    nginx = compose["services"]["nginx"]
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]


def test_long_running_services_have_healthchecks_that_gate_startup(compose) -> None:
    services = compose["services"]
    for name in ["redis", "postgres", "nginx", *store_workers(compose)]:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name in store_workers(compose):
        assert "/healthz" in " ".join(services[name]["healthcheck"]["test"])
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert services["nginx"]["depends_on"][name]["condition"] == "service_healthy"


def test_docker_compose_accepts_the_file() -> None:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose not installed (make test installs it)")
    res = subprocess.run(
        [exe, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr


def test_nginx_accepts_the_configuration(tmp_path: Path) -> None:
    exe = shutil.which("nginx")
    if exe is None:
        pytest.skip("nginx not installed: the structure is checked above, not nginx -t")
    # The worker names resolve only inside compose's network: test against loopback instead.
    text = re.sub(r"server (store\d+):8000", r"server 127.0.0.1:8000", NGINX.read_text())
    conf = tmp_path / "nginx.conf"
    conf.write_text(text.replace("pid /tmp/nginx.pid;", f"pid {tmp_path / 'nginx.pid'};"))
    res = subprocess.run(
        [exe, "-t", "-q", "-p", str(tmp_path), "-e", "stderr", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
