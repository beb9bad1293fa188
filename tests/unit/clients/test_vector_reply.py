"""Query replies of the vector clients are parsed as Python's json parses them (orjson first,
json for what only it reads), and a reply that is not JSON is a ValueError as before."""

import json
import math

import pytest

from aifb.clients.vector.common import reply_json


def test_reply_json_reads_what_json_reads():
    raw = json.dumps({"result": {"points": [{"id": i, "version": 0, "score": 0.1 + i / 3}
                                            for i in range(10)] + [{"id": "a-uuid", "score": 1e-05}]},
                      "status": "ok", "time": 3.1e-05}).encode()
    assert reply_json(raw) == json.loads(raw)
    nan = reply_json(b'{"distances": [[NaN, Infinity, 0.5]]}')["distances"][0]
    assert math.isnan(nan[0]) and nan[1] == math.inf and nan[2] == 0.5
    with pytest.raises(ValueError):
        reply_json(b"<html>502 Bad Gateway</html>")
