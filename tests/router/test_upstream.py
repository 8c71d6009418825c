"""The router's upstream HTTP connections, in-process against a small loopback server that misbehaves
on request: answers matched to their requests, per-request timeouts (one lazily re-armed timer per
connection), keep-alive closed by the replica, resets, HEAD."""
from __future__ import annotations

import asyncio
import random
import time

import httptools
import pytest
import uvloop

from ondeck.serving.router.upstream import Endpoint, HttpResponse, UpstreamError


class Replica(asyncio.Protocol):
    """Answers by path: /ok, /sleep/<ms>, /hang (never), /close (answers with `connection: close`),
    /drop (closes without an answer), /half (half an answer, then closes). The body is the
    request's x-n header, so a test can tell whose answer it got."""

    opened = 0
    closed = 0

    def __init__(self):
        self.parser = httptools.HttpRequestParser(self)
        self.transport = None
        self.url, self.n = b"", b""

    def connection_made(self, transport):
        Replica.opened += 1
        self.transport = transport

    def connection_lost(self, exc):
        Replica.closed += 1

    def data_received(self, data):
        self.parser.feed_data(data)

    def on_message_begin(self):
        self.url, self.n = b"", b""

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        if name.lower() == b"x-n":
            self.n = value

    def on_message_complete(self):
        url, n, head = self.url, self.n, self.parser.get_method() == b"HEAD"
        answer = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(n), n)
        if head:  # the length of the body a GET would get, and no body
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
        elif url == b"/ok":
            self.transport.write(answer)
        elif url.startswith(b"/sleep/"):
            asyncio.get_running_loop().call_later(int(url[7:]) / 1000, self.transport.write, answer)
        elif url == b"/close":
            self.transport.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(n), n))
            self.transport.close()
        elif url == b"/drop":
            self.transport.close()
        elif url == b"/half":
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
            self.transport.close()
        # /hang: no answer, ever


def run(test):
    """Run ``test(endpoint)`` on uvloop (as the router does) with a fresh Replica server."""
    async def main():
        Replica.opened = Replica.closed = 0
        server = await asyncio.get_running_loop().create_server(Replica, "127.0.0.1", 0, backlog=1024)
        endpoint = Endpoint(f"127.0.0.1:{server.sockets[0].getsockname()[1]}", None)
        try:
            return await asyncio.wait_for(test(endpoint), 20)
        finally:
            await endpoint.close()
            server.close()

    return uvloop.run(main())


def send(endpoint: Endpoint, path: str, n: int = 0, timeout: float = 10.0, method: str = "GET") -> asyncio.Future:
    """One request; the future gets the answer or the UpstreamError (as a result, not raised)."""
    future = asyncio.get_running_loop().create_future()
    data = f"{method} {path} HTTP/1.1\r\nhost: x\r\nx-n: {n}\r\ncontent-length: 0\r\n\r\n".encode()
    endpoint.http_send(data, method == "HEAD", 5.0, timeout,
                       lambda answer, error: future.done() or future.set_result(error or answer))
    return future


def test_many_concurrent_requests_each_get_their_own_answer():
    async def test(endpoint):
        results = await asyncio.gather(*(send(endpoint, random.choice(["/ok", "/sleep/1", "/sleep/5"]), n)
                                         for n in range(300)))
        assert [r.body for r in results] == [str(n).encode() for n in range(300)]
        # and again: the connections are reused, not opened anew
        opened = Replica.opened
        results = await asyncio.gather(*(send(endpoint, "/ok", n) for n in range(100)))
        assert all(isinstance(r, HttpResponse) and r.status == 200 for r in results)
        assert Replica.opened == opened

    run(test)


def test_a_timed_out_request_fails_with_timeout_and_its_connection_is_closed():
    async def test(endpoint):
        start = time.monotonic()
        error = await send(endpoint, "/hang", timeout=0.3)
        assert isinstance(error, UpstreamError) and error.kind == "timeout" and not error.retryable
        assert 0.29 <= time.monotonic() - start < 2.0
        await asyncio.wait_for(_until(lambda: Replica.closed == 1), 5)  # a late answer must not reach the next request
        assert (await send(endpoint, "/ok", 7)).body == b"7"

    run(test)


def test_a_shorter_timeout_after_a_longer_one_on_the_same_connection_is_honoured():
    async def test(endpoint):
        assert (await send(endpoint, "/ok", 1, timeout=60)).body == b"1"  # the connection's timer now says 60 s
        start = time.monotonic()
        error = await send(endpoint, "/hang", timeout=0.3)
        assert isinstance(error, UpstreamError) and error.kind == "timeout"
        assert time.monotonic() - start < 2.0
        assert Replica.opened == 1  # it was the same connection

    run(test)


def test_the_deadline_moves_with_each_request_on_a_kept_alive_connection():
    async def test(endpoint):
        # eight requests of ~0.1 s each with a 0.3 s timeout: together past the first one's deadline,
        # each within its own; the timer armed for the first must not fail a later one
        for n in range(8):
            answer = await send(endpoint, "/sleep/100", n, timeout=0.3)
            assert isinstance(answer, HttpResponse) and answer.body == str(n).encode(), answer
        assert Replica.opened == 1

    run(test)


@pytest.mark.parametrize("path, retryable", [("/drop", True), ("/half", False)])
def test_a_connection_closed_before_or_during_the_answer(path, retryable):
    async def test(endpoint):
        error = await send(endpoint, path)
        assert isinstance(error, UpstreamError) and error.kind == "connect" and error.retryable is retryable
        assert (await send(endpoint, "/ok", 3)).body == b"3"  # a new connection

    run(test)


def test_a_replica_that_closes_keep_alive_is_not_asked_again_on_that_connection():
    async def test(endpoint):
        for n in range(5):
            assert (await send(endpoint, "/close", n)).body == str(n).encode()
        assert Replica.opened == 5

    run(test)


def test_a_head_answer_has_no_body():
    async def test(endpoint):
        answer = await send(endpoint, "/ok", method="HEAD")
        assert answer.status == 200 and answer.body == b""
        assert (await send(endpoint, "/ok", 4)).body == b"4"

    run(test)


async def _until(condition) -> None:
    while not condition():
        await asyncio.sleep(0.01)
