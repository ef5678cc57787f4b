"""The baseline for bench/ingest.py: Flask + HMAC, storing nothing.

``POST /webhook`` verifies ``X-Hub-Signature-256`` (HMAC-SHA256 of the raw
body, compared in constant time against every secret in
``GITHUB_WEBHOOK_SECRET``) and answers 202. Served as ``bare_hmac:app`` with
``bench/`` on the Python path.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from flask import Flask, jsonify, request

SECRETS = tuple(
    s.strip().encode() for s in os.environ.get("GITHUB_WEBHOOK_SECRET", "").split(",") if s.strip()
)

app = Flask(__name__)


@app.post("/webhook")
def webhook():  # noqa: ANN201 - a Flask view
    body = request.get_data()
    header = request.headers.get("X-Hub-Signature-256", "")
    ok = False
    for secret in SECRETS:
        expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        ok |= hmac.compare_digest(expected, header)
    if not ok:
        return jsonify(error="bad signature"), 401
    return jsonify(ok=True, delivery=request.headers.get("X-GitHub-Delivery")), 202
