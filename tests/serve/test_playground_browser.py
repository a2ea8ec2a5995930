"""The playground in a real browser (Playwright driving Debian's chromium): the notice on every switch of
model, a chat turn with a system prompt, a side-by-side comparison and its vote, and opting out; each step
is checked in the database. Screenshots go to $PLAYGROUND_SHOTS (default /tmp/playground_shots); with
$PLAYGROUND_MODEL set (e.g. ``default``) both sides serve that model instead of the tiny ones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import select

from instructrl.web.models import Comparison, Consent, ServedPrompt, User

from ..web.conftest import PASSWORD, unique
from ..web.test_browser import browser  # noqa: F401  (the fixture)
from .conftest import serving

SHOTS = Path(os.environ.get("PLAYGROUND_SHOTS", "/tmp/playground_shots"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir, second_model_dir):
    model = os.environ.get("PLAYGROUND_MODEL")
    models = {"sft": model, "ppo": model} if model else {"sft": tiny_model_dir, "ppo": second_model_dir}
    with serving(tmp_path_factory.mktemp("playground"), models, ("default_max_tokens=48",)) as s:
        yield s


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def test_chat_compare_and_opt_out_in_a_browser(server, browser):  # noqa: F811
    org = server.org(unique("acme-"))
    maria = server.user(org, name=unique("maria"))
    context = browser.new_context(viewport={"width": 1360, "height": 860})
    context.set_default_timeout(60_000)
    page = context.new_page()
    page.goto(f"{server.url}/login")
    page.fill("input[name=username]", maria)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/playground/chat")

    with server.db.read() as session:
        user_id = session.scalar(select(User.id).where(User.username == maria))

    def consents() -> set[str]:
        with server.db.read() as session:
            return set(session.scalars(select(Consent.model).where(Consent.user_id == user_id)))

    # the notice comes first, and nothing is sent before it is acknowledged
    notice = page.locator("#notice")
    assert notice.is_visible() and "sft" in page.inner_text("#notice-model")
    assert page.locator("#send").is_disabled()
    shot(page, "playground_notice")
    page.click("#notice-ok")
    notice.wait_for(state="hidden")
    assert consents() == {"sft"}

    # a chat turn with a system prompt
    page.fill("#system", "Answer in one short sentence.")
    page.fill("#message", "What is the capital of France?")
    page.click("#send")
    page.locator("#send:not([disabled])").wait_for()
    answer = page.locator(".msg-assistant .body").last.inner_text()
    assert page.locator(".msg-user .body").last.inner_text() == "What is the capital of France?"
    with server.db.read() as session:
        row = session.scalars(select(ServedPrompt).where(ServedPrompt.user_id == user_id)).one()
    assert row.source == "playground" and row.model == "sft" and row.consent is True and row.org_id == org
    assert row.prompt == [
        {"role": "system", "content": "Answer in one short sentence."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    assert row.response == [answer]
    shot(page, "playground_chat")

    # switching model brings the notice back
    page.select_option("#model", "ppo")
    notice.wait_for(state="visible")
    assert page.inner_text("#notice-model") == "ppo"
    page.click("#notice-ok")
    notice.wait_for(state="hidden")
    assert consents() == {"sft", "ppo"}

    # side by side: answers first, names after the vote
    page.click("a[href='/playground/compare']")
    page.wait_for_url("**/playground/compare")
    page.click("#notice-ok")
    page.locator("#notice").wait_for(state="hidden")
    assert not page.locator("#answers").is_visible() and not page.locator("#votes").is_visible()
    page.fill("#prompt", "Write a haiku about the sea.")
    page.click("#compare-go")
    page.locator("#answers").wait_for(state="visible")
    assert page.inner_text("#name-left") == "" and page.inner_text("#name-right") == ""
    left, right = page.inner_text("#left"), page.inner_text("#right")
    page.click("[data-vote=left]")
    page.locator("#voted:not(:empty)").wait_for()
    assert "saved" in page.inner_text("#voted"), page.inner_text("#voted")
    names = page.inner_text("#name-left").strip("()"), page.inner_text("#name-right").strip("()")
    assert sorted(names) == ["ppo", "sft"]
    with server.db.read() as session:
        comparison = session.scalars(select(Comparison).where(Comparison.user_id == user_id)).one()
    assert comparison.vote == "left" and tuple(comparison.models) == names
    assert [r.strip() for r in comparison.responses] == [left.strip(), right.strip()]
    shot(page, "playground_compare")

    # opting out: every prompt stays stored, none may train
    page.click("a[href='/playground/data']")
    page.wait_for_url("**/playground/data")
    assert page.locator("#my-prompts tbody tr").count() == 2
    assert "yes" in page.locator("#my-prompts tbody").inner_text()
    page.check("#opt_out")
    page.click("#save-data-use")
    page.wait_for_url("**/playground/data?saved=1")
    assert page.locator("#opt_out").is_checked()
    cells = page.locator("#my-prompts tbody tr td:last-child").all_inner_texts()
    assert cells == ["no", "no"]
    with server.db.read() as session:
        assert session.get(User, user_id).training_opt_out is True
    shot(page, "playground_data")
    context.close()
