"""/v1/moderations in OpenAI's shape, driven by the official openai client against the real server on loopback."""

from __future__ import annotations

import sqlite3

import httpx
import openai
import pytest
from guard_helpers import UNSAFE_WORD, KeywordDetector, proxy

from seawall.guard.moderation import HAZARD_TO_OPENAI, OPENAI_CATEGORIES


class HazardDetector(KeywordDetector):
    """The keyword detector, naming a seawall hazard code for what it flags."""

    def predict_category(self, pairs, scores=None, threshold=None):
        return ["violent_crimes" if c else None for c in super().predict_category(pairs, scores, threshold)]


def _audit_rows(db: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT request_id, endpoint, prompt_sha256, unsafe, category FROM decisions ORDER BY id"
        ).fetchall()


def test_moderations_create_with_the_openai_client(tmp_path):
    with proxy(tmp_path, None, detector=HazardDetector(), upstream_obj=object()) as (url, db, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        one = client.moderations.create(input=f"Attach the {UNSAFE_WORD} to the charge.")
        assert one.model == "keyword-test-1" and one.id.startswith("modr-")
        result = one.results[0]
        assert result.flagged is True
        assert result.categories.violence is True and result.category_scores.violence == pytest.approx(0.9)
        assert result.categories.hate is False and result.category_scores.hate == 0.0
        many = client.moderations.create(input=["How do I bake bread?", f"the {UNSAFE_WORD} goes here"])
        assert [r.flagged for r in many.results] == [False, True]
        assert not any(many.results[0].categories.model_dump().values())
        parts = client.moderations.create(input=[{"type": "text", "text": f"a {UNSAFE_WORD}"}])
        assert parts.results[0].flagged is True
        rows = _audit_rows(db)
    # One audit row per moderated text, each scored as a response to an empty prompt.
    assert len(rows) == 4 and {r[1] for r in rows} == {"/moderations"}
    assert len({r[0] for r in rows}) == 4
    assert [r[3] for r in rows] == [1, 0, 1, 1]
    assert rows[0][4] == "violent_crimes"


def test_moderations_refuses_image_parts_and_over_limit_batches(tmp_path):
    with proxy(tmp_path, None, upstream_obj=object(), classify_max_pairs=2) as (url, db, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError, match=r"input\[1\].*image_url"):
            client.moderations.create(
                input=[{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "x"}}]
            )
        with pytest.raises(openai.BadRequestError, match="exceed the limit 2"):
            client.moderations.create(input=["a", "b", "c"])
        assert _audit_rows(db) == []


def test_moderations_need_a_key_when_keys_are_configured(tmp_path):
    with proxy(tmp_path, None, upstream_obj=object(), keys=("sk-test-key",)) as (url, db, _):
        assert httpx.post(f"{url}/v1/moderations", json={"input": "hi"}).status_code == 401
        ok = httpx.post(
            f"{url}/v1/moderations", json={"input": "hi"}, headers={"Authorization": "Bearer sk-test-key"}
        )
        assert ok.status_code == 200 and ok.json()["results"][0]["flagged"] is False
        assert len(_audit_rows(db)) == 1


def test_every_mapped_category_is_an_openai_category():
    assert {c for cats in HAZARD_TO_OPENAI.values() for c in cats} <= set(OPENAI_CATEGORIES)
