"""POST /webhook: refusals store nothing; verified deliveries are stored once and answered 202."""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import func, select

from minipipe_gh.core import events
from minipipe_gh.store.models import Delivery
from tests.support import OLD_SECRET, SECRET, payload


def stored(rt) -> list[Delivery]:
    with rt.database.unit() as s:
        return list(s.scalars(select(Delivery).order_by(Delivery.seq)))


def count(rt) -> int:
    with rt.database.unit() as s:
        return s.scalar(select(func.count()).select_from(Delivery))


def test_a_verified_delivery_is_stored_and_answered_202(deliver, rt):
    data = payload("issue_comment.created", comment__body="/approve")
    resp = deliver("issue_comment", data, delivery_id="d-1")
    assert resp.status_code == 202
    assert resp.json == {"ok": True, "delivery": "d-1"}
    [row] = stored(rt)
    assert (row.delivery_id, row.event, row.action, row.status) == (
        "d-1",
        "issue_comment",
        "created",
        "queued",
    )
    assert row.repository == "Codertocat/Hello-World"
    assert row.natural_key == f"issue_comment:created:{data['comment']['id']}"
    assert json.loads(row.payload) == data
    assert row.headers["X-GitHub-Event"] == "issue_comment"
    assert "X-Hub-Signature-256" not in row.headers


def test_the_previous_secret_still_verifies_during_rotation(deliver, rt):
    resp = deliver("pull_request", payload("pull_request.opened"), secret=OLD_SECRET)
    assert resp.status_code == 202
    assert count(rt) == 1


def test_a_redelivery_is_answered_200_and_stored_once(deliver, rt):
    data = payload("pull_request.opened")
    assert deliver("pull_request", data, delivery_id="same").status_code == 202
    again = deliver("pull_request", data, delivery_id="same")
    assert again.status_code == 200
    assert again.json["duplicate"] is True
    assert count(rt) == 1


def test_the_same_comment_under_two_delivery_ids_is_stored_once(deliver, rt):
    data = payload("issue_comment.created", comment__body="/approve")
    assert deliver("issue_comment", data, delivery_id="from-app").status_code == 202
    assert deliver("issue_comment", data, delivery_id="from-repo-hook").status_code == 200
    assert [d.delivery_id for d in stored(rt)] == ["from-app"]


def test_any_event_resent_byte_for_byte_under_a_new_delivery_id_is_stored_once(deliver, rt):
    """GitHub signs the body only: its digest is the key a new delivery id cannot change."""
    body = json.dumps(payload("pull_request.closed"), indent=2).encode()
    assert deliver("pull_request", body, delivery_id="first").status_code == 202
    again = deliver("pull_request", body, delivery_id="replayed")
    assert (again.status_code, again.json["duplicate"]) == (200, True)
    [row] = stored(rt)
    assert row.delivery_id == "first"
    assert row.natural_key == "sha256:" + hashlib.sha256(body).hexdigest()


def test_events_with_other_bytes_are_each_stored(deliver, rt):
    opened = payload("pull_request.opened")
    assert deliver("pull_request", opened, delivery_id="one").status_code == 202
    pushed = payload("pull_request.opened", pull_request__head__sha="b" * 40)
    assert deliver("pull_request", pushed, delivery_id="two").status_code == 202
    assert [d.delivery_id for d in stored(rt)] == ["one", "two"]


def test_ping_answers_200_and_stores_nothing(deliver, rt):
    resp = deliver("ping", payload("ping.with-app_id"))
    assert resp.status_code == 200
    assert resp.json["ok"] is True
    assert count(rt) == 0


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({"X-Hub-Signature-256": None}, "missing X-Hub-Signature-256"),
        ({"X-Hub-Signature-256": "sha256=" + "0" * 64}, "does not match"),
        ({"X-Hub-Signature-256": "md5=abc"}, "must start with sha256="),
        # the legacy SHA-1 header alone is not enough
        ({"X-Hub-Signature-256": None, "X-Hub-Signature": "sha1=deadbeef"}, "missing"),
    ],
)
def test_a_bad_or_missing_signature_is_401_and_stores_nothing(deliver, rt, headers, why):
    resp = deliver("pull_request", payload("pull_request.opened"), headers=headers)
    assert resp.status_code == 401
    assert why in resp.json["error"]
    assert count(rt) == 0


def test_a_signature_made_with_another_secret_is_401(deliver, rt):
    resp = deliver("pull_request", payload("pull_request.opened"), secret="wrong")
    assert resp.status_code == 401
    assert count(rt) == 0


def test_a_body_that_is_not_json_is_400(deliver, rt):
    resp = deliver("pull_request", b"this is not json")
    assert resp.status_code == 400
    assert resp.json["error"] == "body is not JSON"
    assert count(rt) == 0


def test_a_json_body_that_is_not_an_object_is_400(deliver, rt):
    resp = deliver("pull_request", b"[1, 2, 3]")
    assert resp.status_code == 400
    assert count(rt) == 0


def test_a_missing_event_header_is_400(deliver, rt):
    resp = deliver("pull_request", payload("pull_request.opened"), headers={"X-GitHub-Event": None})
    assert resp.status_code == 400
    assert "X-GitHub-Event" in resp.json["error"]
    assert count(rt) == 0


def test_a_missing_delivery_header_is_400(deliver, rt):
    resp = deliver(
        "pull_request", payload("pull_request.opened"), headers={"X-GitHub-Delivery": None}
    )
    assert resp.status_code == 400
    assert count(rt) == 0


def test_a_body_over_25_mb_is_413_before_it_is_read(client, rt):
    body = b"{" + b" " * (events.MAX_BODY) + b"}"
    headers = {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": "big",
        "X-Hub-Signature-256": events.signature(body, SECRET),
    }
    resp = client.post("/webhook", data=body, headers=headers)
    assert resp.status_code == 413
    assert count(rt) == 0


def test_get_on_the_webhook_is_405(client, rt):
    assert client.get("/webhook").status_code == 405


def test_setup_mode_answers_503_with_what_to_do(rt, deliver):
    import dataclasses

    rt.settings = dataclasses.replace(rt.settings, webhook_secrets=())
    resp = deliver("pull_request", payload("pull_request.opened"))
    assert resp.status_code == 503
    assert "setup mode" in resp.json["error"]
    assert count(rt) == 0


def test_the_inbox_keeps_order_keys_per_pull_request(deliver, rt):
    deliver("pull_request", payload("pull_request.opened"))
    deliver(
        "issue_comment",
        payload("issue_comment.created", issue__pull_request={"url": "x"}, issue__number=2),
    )
    deliver("installation", payload("installation.created"))
    keys = [d.order_key for d in stored(rt)]
    assert keys == ["Codertocat/Hello-World#2", "Codertocat/Hello-World#2", "installation:957387"]


def test_healthz_reports_the_database(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json == {"status": "ok", "database": "reachable"}


def test_metrics_count_deliveries_by_event_and_outcome(client, deliver):
    deliver("pull_request", payload("pull_request.opened"), delivery_id="m-1")
    deliver("pull_request", payload("pull_request.opened"), delivery_id="m-1")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'minipipe_deliveries_received_total{event="pull_request",outcome="accepted"}' in text
    assert 'minipipe_deliveries_received_total{event="pull_request",outcome="duplicate"}' in text
    assert 'minipipe_queue_depth{status="queued"} 1.0' in text
