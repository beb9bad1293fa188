"""The shared op-mix of every client: checks, normalisation, and the seeded draw."""

import random

import pytest

from aifb.clients.base import OpMix
from aifb.errors import ServiceError


def test_weights_are_normalised_in_name_order():
    mix = OpMix({"set": 1, "get": 3}, ("get", "set"), "redis workload.ops")
    assert list(mix.weights) == ["get", "set"]
    assert mix.weights == {"get": 0.75, "set": 0.25}
    assert mix.share("get") == 0.75 and mix.share("del") == 0.0


def test_pick_follows_the_weights_and_covers_the_top_edge():
    mix = OpMix({"a": 1, "b": 1, "c": 2}, ("a", "b", "c"), "x.ops")
    assert [mix.pick(u) for u in (0.0, 0.2499, 0.25, 0.4999, 0.5, 0.999999999)] == \
        ["a", "a", "b", "b", "c", "c"]
    rnd = random.Random(1)
    draws = [mix.pick(rnd.random()) for _ in range(40000)]
    assert abs(draws.count("c") / len(draws) - 0.5) < 0.01
    assert abs(draws.count("a") / len(draws) - 0.25) < 0.01


def test_zero_weight_ops_are_never_picked():
    mix = OpMix({"get": 1, "set": 0}, ("get", "set"), "x.ops")
    assert mix.weights == {"get": 1.0} and {mix.pick(u / 10) for u in range(10)} == {"get"}


@pytest.mark.parametrize("ops, message", [
    ({"get": 1, "del": 1}, r"x.ops: unsupported operation\(s\) \['del'\] \(supported: get, set\)"),
    ({"get": 0}, "x.ops: the weights sum to zero"),
    ({}, "x.ops: the weights sum to zero"),
    ({"get": "many"}, "x.ops: weights must be numbers"),
    (["get"], "x.ops: expected a mapping"),
])
def test_bad_mixes_name_the_field(ops, message):
    with pytest.raises(ServiceError, match=message):
        OpMix(ops, ("get", "set"), "x.ops")
