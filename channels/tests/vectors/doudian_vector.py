"""Records a Doudian request signature with the public PyPI SDK `doudian` (minibear2021/doudian).

    pip install doudian==0.6
    python3 channels/tests/vectors/doudian_vector.py

The SDK is driven through its own request path (`DouDian.request`), with its clock pinned and
`requests.post` replaced by a recorder, so nothing leaves the machine; it prints, as JSON, what the
SDK would have sent and signed. `sign_unix_ts` is the SDK's `_sign` over the same param_json with a
Unix-seconds timestamp (what our adapter sends; the SDK itself sends "yyyy-MM-dd HH:mm:ss").
"""

import json
from datetime import datetime
from importlib.metadata import version
from urllib.parse import parse_qs, urlsplit

import doudian.core as core
from doudian import AppType, DouDian

APP_KEY = "7152331588175513100"
APP_SECRET = "5a9e2b1c-0d3f-4e5a-8b7c-6d5e4f3a2b1c"
METHOD_PATH = "/order/searchList"
PARAMS = {
    "update_time_start": 1700000000,
    "update_time_end": 1700001800,
    "page": 0,
    "size": 100,
    "order_by": "update_time",
    "order_asc": False,
}
# Non-ASCII business data: shows how the SDK serializes param_json (ensure_ascii escapes).
PARAMS_CJK = {"order_id": "6920000000000000001", "remark": "张三 收"}
UNIX_TS = "1700000000"


class PinnedClock(datetime):
    @classmethod
    def now(cls, tz=None):
        return cls(2023, 11, 15, 6, 13, 20)


captured = []


def recorder(url, data, headers, proxies):
    captured.append({"url": url, "data": data, "headers": headers})
    raise ConnectionError("recorded, not sent")


core.datetime = PinnedClock
core.requests.post = recorder

# A tool-type app without an authorization code makes no token call on construction.
sdk = DouDian(APP_KEY, APP_SECRET, app_type=AppType.TOOL)
sdk._token = {"access_token": "test-access-token", "expires_in": 2**40}

out = {"sdk": "doudian", "sdk_version": version("doudian"), "app_key": APP_KEY, "app_secret": APP_SECRET}
for name, params in (("search", PARAMS), ("cjk", PARAMS_CJK)):
    sdk.request(METHOD_PATH, params)
    sent = captured[-1]
    q = parse_qs(urlsplit(sent["url"]).query)
    out[name] = {
        "method": q["method"][0],
        "param_json": sent["data"],
        "timestamp": q["timestamp"][0],
        "sign": q["sign"][0],
        "sign_unix_ts": sdk._sign(method=q["method"][0], param_json=sent["data"], timestamp=UNIX_TS),
        "unix_ts": UNIX_TS,
    }
print(json.dumps(out, ensure_ascii=False, indent=2))
