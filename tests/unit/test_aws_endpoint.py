"""The endpoint and region a batch brings to a Dask worker (``aws.using``): the clients built for
it use them, in every thread, and a block for another endpoint waits until it ends (a worker
shared by scans of different endpoints never mixes them). No request is sent: a client's
endpoint and region are read from the client."""

from __future__ import annotations

import threading

import pytest

from panscan.sources import aws
from panscan.sources.aws import Endpoint


def test_clients_in_a_using_block_use_its_endpoint_and_region_in_any_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    seen: dict[str, tuple[str, str]] = {}

    def build(name: str) -> None:
        made = aws.client("s3")
        seen[name] = (made.meta.endpoint_url, made.meta.region_name)

    with aws.using(Endpoint("http://127.0.0.1:7", "eu-west-3")):
        build("main")
        other = threading.Thread(target=build, args=("thread",))  # a prefetch thread, say
        other.start()
        other.join()
    build("after")
    assert seen["main"] == seen["thread"] == ("http://127.0.0.1:7", "eu-west-3")
    assert seen["after"] == ("http://127.0.0.1:9", "us-east-1")  # the environment's again


def test_an_endpoint_without_url_or_region_leaves_the_environment_to_decide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    with aws.using(Endpoint()):
        made = aws.client("s3")
    assert (made.meta.endpoint_url, made.meta.region_name) == ("http://127.0.0.1:9", "us-east-1")


def test_blocks_for_another_endpoint_wait_and_blocks_for_the_same_one_do_not() -> None:
    first, second = Endpoint("http://127.0.0.1:7", "eu-west-3"), Endpoint("http://127.0.0.1:8", "eu-west-3")
    order: list[str] = []
    entered = threading.Event()
    release = threading.Event()

    def hold(endpoint: Endpoint, name: str) -> None:
        with aws.using(endpoint):
            order.append(f"{name} in")
            entered.set()
            release.wait(10)
            order.append(f"{name} out")

    holder = threading.Thread(target=hold, args=(first, "first"))
    holder.start()
    assert entered.wait(10)

    with aws.using(first):  # the same endpoint: enters at once
        order.append("same in")
    def enter_second() -> None:
        with aws.using(second):
            order.append("second in")

    other = threading.Thread(target=enter_second)
    other.start()
    other.join(0.5)
    assert other.is_alive()  # waiting for the first endpoint's block to end
    release.set()
    holder.join(10)
    other.join(10)
    assert order == ["first in", "same in", "first out", "second in"]


def test_of_this_process_is_the_endpoint_and_region_the_scan_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
    monkeypatch.setenv("AWS_REGION", "ap-southeast-2")
    assert Endpoint.of_this_process() == Endpoint("http://127.0.0.1:5000", "ap-southeast-2")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-north-1")
    assert Endpoint.of_this_process() == Endpoint(None, "eu-north-1")
