"""Slow and malformed clients, over raw sockets against a live server: headers that trickle in,
a body shorter than its Content-Length or one that stops arriving, contradictory framing, and
more connections than the server allows (server/http_server.py, server.api.middleware.SlowBody)."""

from __future__ import annotations

import json
import socket
import time

import pytest
from conftest import live_server


@pytest.fixture(scope="module")
def strict_server(bge_m3_dir):
    with live_server(embedding_model=str(bge_m3_dir), header_read_timeout=1.0, body_read_timeout=1.0,
                     max_connections=20) as srv:
        yield srv


def connect(srv) -> socket.socket:
    host, port = srv.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def read_all(sock: socket.socket, limit_s: float = 10) -> bytes:
    """What the server sends until it closes the connection (b"" if it closes without a word)."""
    sock.settimeout(limit_s)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except TimeoutError:
        raise AssertionError(f"the server kept the connection open past {limit_s} s; got {b''.join(chunks)[:200]!r}")
    return b"".join(chunks)


def status_and_body(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_headers_that_trickle_in_are_cut_off(strict_server):
    """A byte a second: the connection is closed once the headers are 1 s late, whatever the
    trickle; an idle connection that never sends a byte likewise."""
    trickling, idle = connect(strict_server), connect(strict_server)
    started = time.monotonic()
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n"
    closed_at = None
    for byte in request:
        try:
            trickling.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            closed_at = time.monotonic() - started
            break
        trickling.settimeout(0.3)
        try:
            if trickling.recv(1) == b"":
                closed_at = time.monotonic() - started
                break
        except TimeoutError:
            pass
    assert closed_at is not None and closed_at < 3, closed_at
    assert read_all(idle) == b""
    assert time.monotonic() - started < 5


def test_a_body_shorter_than_its_length_gets_408_and_the_connection_closes(strict_server):
    sock = connect(strict_server)
    body = json.dumps({"model": "bge-m3", "input": "hello"}).encode()
    sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % (len(body) + 50) + body)
    started = time.monotonic()
    status, answer = status_and_body(read_all(sock))
    assert status == 408 and answer["error"]["code"] == "body_timeout", answer
    assert time.monotonic() - started < 5


def test_a_body_that_keeps_arriving_is_not_cut_off(strict_server):
    """The limit is per piece, not for the whole body: a slow upload that keeps sending goes on."""
    sock = connect(strict_server)
    body = json.dumps({"model": "bge-m3", "input": "hello"}).encode()
    sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body))
    for i in range(0, len(body), 8):  # 0.5 s apart: 2 s in all, twice the timeout
        sock.sendall(body[i:i + 8])
        time.sleep(0.5)
    status, answer = status_and_body(read_all(sock))
    assert status == 200 and answer["data"][0]["embedding"], answer


def test_the_deadline_counts_from_arrival_not_from_the_end_of_the_body(strict_server):
    """A body that took longer to arrive than the request's timeout: 504 at once, nothing computed
    for an answer its client has stopped waiting for."""
    sock = connect(strict_server)
    body = json.dumps({"model": "bge-m3", "input": "hello"}).encode()
    sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
                 b"X-Request-Timeout: 1\r\nContent-Length: %d\r\n\r\n" % len(body))
    for i in range(0, len(body), 16):  # 0.5 s apart: 1.5 s in all
        sock.sendall(body[i:i + 16])
        time.sleep(0.5)
    status, answer = status_and_body(read_all(sock))
    assert status == 504 and answer["error"]["code"] == "timeout", answer


def test_contradictory_framing_is_refused_at_once(strict_server):
    sock = connect(strict_server)
    sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    started = time.monotonic()
    status, answer = status_and_body(read_all(sock))
    assert status == 400 and answer["error"]["code"] == "invalid_framing", answer
    assert time.monotonic() - started < 1


def test_connections_past_the_limit_get_503(strict_server):
    held = [connect(strict_server) for _ in range(20)]
    try:
        extra = connect(strict_server)
        extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_all(extra).split()[1] == b"503"
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    with strict_server.client() as client:  # the connections gone, the server answers again
        assert client.get("/health").status_code == 200
