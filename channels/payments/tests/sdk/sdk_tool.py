"""Drives the public PyPI payment SDKs for tests/payments/sdk.rs.

Usage: sdk_tool.py COMMAND < input.json > output.json

Every signature and verification here goes through the SDKs' own code (wechatpayv3.utils,
wechatpayv3.core.Core, alipay.AliPay). The SDKs have no helper to *build* a WeChat Pay callback
(only to decrypt one), so wx_callback encrypts with `cryptography`'s AESGCM, the primitive the
SDK's own aes_decrypt uses, and signs with the SDK's rsa_sign.
"""

import json
import sys
from base64 import b64encode
from urllib.parse import parse_qsl, urlencode

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from wechatpayv3.core import Core
from wechatpayv3.utils import build_authorization, load_private_key, load_public_key, rsa_sign, rsa_verify
from alipay import AliPay


def wx_callback(i):
    """A TRANSACTION.SUCCESS (or other) callback as WeChat Pay sends it: headers + body."""
    plaintext = json.dumps(i["resource"], ensure_ascii=False).encode("utf-8")
    nonce = i["resource_nonce"]
    aad = i["associated_data"]
    ciphertext = AESGCM(i["apiv3_key"].encode("utf-8")).encrypt(nonce.encode("utf-8"), plaintext, aad.encode("utf-8"))
    body = json.dumps(
        {
            "id": "EV-2018022511223320873",
            "create_time": "2015-05-20T13:29:35+08:00",
            "resource_type": "encrypt-resource",
            "event_type": i["event_type"],
            "summary": "支付成功",
            "resource": {
                "original_type": aad,
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": b64encode(ciphertext).decode("utf-8"),
                "associated_data": aad,
                "nonce": nonce,
            },
        },
        ensure_ascii=False,
    )
    key = load_private_key(i["platform_key_pem"])
    timestamp = str(i["timestamp"])
    header_nonce = i["header_nonce"]
    signature = rsa_sign(key, "%s\n%s\n%s\n" % (timestamp, header_nonce, body))
    return {
        "headers": {
            "Wechatpay-Timestamp": timestamp,
            "Wechatpay-Nonce": header_nonce,
            "Wechatpay-Signature": signature,
            "Wechatpay-Serial": i["serial"],
            "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
        },
        "body": body,
    }


def wx_sign(i):
    return {"signature": rsa_sign(load_private_key(i["key_pem"]), i["message"])}


def wx_verify_request(i):
    """The SDK's rsa_verify builds `a\\nb\\nc\\n`; a request message `M\\nP\\nT\\nN\\nB\\n` is that
    with a = `M\\nP\\nT`, b = N, c = B."""
    key = load_public_key(i["public_key_pem"])
    a = "%s\n%s\n%s" % (i["method"], i["path"], i["timestamp"])
    return {"ok": rsa_verify(a, i["nonce"], i["body"], i["signature"], key)}


def wx_build_authorization(i):
    return {
        "authorization": build_authorization(
            i["path"], i["method"], i["mchid"], i["serial_no"], load_private_key(i["key_pem"]), data=i["body"], nonce_str=i["nonce"]
        )
    }


def _core(i):
    return Core(
        mchid=i["mchid"],
        cert_serial_no="UNUSED",
        private_key=i["merchant_key_pem"],
        apiv3_key=i["apiv3_key"],
        public_key=i["platform_public_pem"],
        public_key_id=i["serial"],
    )


def wx_decrypt_callback(i):
    """The SDK's full callback path: signature check, then AES-GCM decrypt."""
    return {"resource": _core(i).decrypt_callback(i["headers"], i["body"])}


def wx_verify_response(i):
    return {"ok": _core(i)._verify_signature(i["headers"], i["body"])}


def _alipay(i):
    return AliPay(
        appid=i.get("app_id", "2021000000000000"),
        app_notify_url=None,
        app_private_key_string=i["private_key_pem"],
        alipay_public_key_string=i["public_key_pem"],
        sign_type="RSA2",
    )


def ali_sign(i):
    """sign_data returns the signed query string; the SDK's signature is its `sign`."""
    signed = _alipay(i).sign_data(dict(i["params"]))
    return {"sign": dict(parse_qsl(signed, keep_blank_values=True))["sign"]}


def ali_notify(i):
    """A notify form signed the way Alipay signs it (sign_type not covered), by the SDK."""
    params = dict(i["params"])
    signed = _alipay(i).sign_data(dict(params))
    sign = dict(parse_qsl(signed, keep_blank_values=True))["sign"]
    params["sign_type"] = "RSA2"
    params["sign"] = sign
    return {"form": urlencode(params)}


def ali_verify_notify(i):
    data = dict(parse_qsl(i["form"], keep_blank_values=True))
    sign = data.pop("sign")
    return {"ok": bool(_alipay(i).verify(data, sign))}


def ali_verify_response(i):
    try:
        content = _alipay(i)._verify_and_return_sync_response(i["body"], i["response_type"])
        return {"ok": True, "content": content}
    except Exception as e:  # the SDK raises on a bad signature
        return {"ok": False, "error": repr(e)}


COMMANDS = {f.__name__: f for f in [
    wx_callback, wx_sign, wx_verify_request, wx_build_authorization, wx_decrypt_callback, wx_verify_response,
    ali_sign, ali_notify, ali_verify_notify, ali_verify_response,
]}

if __name__ == "__main__":
    json.dump(COMMANDS[sys.argv[1]](json.load(sys.stdin)), sys.stdout, ensure_ascii=False)
