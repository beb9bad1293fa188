"""The records' chunk_times text (aifb.records): written inline for speed (one value per
streamed token), it must be exactly aifb.clock.ns_to_s_text's, before t0 included."""

import random

from aifb.clock import ns_to_s_text
from aifb.records import _extra_json


def test_chunk_times_are_written_as_ns_to_s_text_writes_them():
    t0 = 10 ** 12
    rng = random.Random(3)
    values = [t0 + rng.randint(-10 ** 10, 10 ** 13) for _ in range(500)]
    values += [t0, t0 - 1, t0 + 1, t0 + 999_999_999, t0 + 10 ** 9, t0 - 10 ** 9 - 5]
    want = "[" + ",".join(ns_to_s_text(v - t0) for v in values) + "]"
    assert _extra_json({"chunk_times": values, "output_tokens": 3}, t0) == \
        f',"chunk_times":{want},"output_tokens":3'
