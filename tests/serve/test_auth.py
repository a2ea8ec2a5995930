"""Who may use the API and see what: keyless only while no key exists (and only on 127.0.0.1), then a
valid, unrevoked key on every request; one organization never reads another's prompts; rate limits per
key; the playground's requests need their session's CSRF token, and user text is shown escaped."""

from __future__ import annotations

import time

import httpx

from instructrl.serve.config import ServeConfig
from instructrl.serve.run import Serving, is_loopback
from instructrl.web.keys import revoke_key

from .conftest import serving

CHAT = {"model": "a", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}


def api(served, key: str | None = None) -> httpx.Client:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=served.url, headers=headers, timeout=60)


def until(check, seconds: float = 5.0) -> bool:
    """The server looks the key count up at most once a second: wait for a change to show."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def test_keys_once_one_exists_and_revoked_keys_stop_working(served):
    with api(served) as anonymous:
        assert anonymous.post("/v1/chat/completions", json=CHAT).status_code == 200  # no key exists yet
        org = served.org()
        alice = served.user(org)
        key = served.key(alice)
        assert until(lambda: anonymous.post("/v1/chat/completions", json=CHAT).status_code == 401)
        error = anonymous.post("/v1/chat/completions", json=CHAT).json()["error"]
        assert error["code"] == "missing_api_key" and error["type"] == "authentication_error"
        assert anonymous.get("/v1/models").status_code == 401
    with api(served, "irl-not-a-key") as wrong:
        assert wrong.post("/v1/chat/completions", json=CHAT).json()["error"]["code"] == "invalid_api_key"
    with api(served, key) as good:
        assert good.post("/v1/chat/completions", json=CHAT).status_code == 200
        with served.db.write() as session:
            revoke_key(session, key[:12])
        revoked = good.post("/v1/chat/completions", json=CHAT)
        assert revoked.status_code == 401 and revoked.json()["error"]["code"] == "invalid_api_key"
    # a malformed header is refused too
    with httpx.Client(base_url=served.url, headers={"authorization": "Basic abc"}, timeout=30) as basic:
        assert basic.post("/v1/chat/completions", json=CHAT).status_code == 401


def test_an_organization_reads_only_its_own_prompts(served):
    org_a, org_b = served.org(), served.org()
    key_a, key_b = served.key(served.user(org_a)), served.key(served.user(org_b))
    with api(served, key_a) as a, api(served, key_b) as b:
        secret = {"model": "a", "messages": [{"role": "user", "content": "org A's secret plan"}], "max_tokens": 3}
        assert a.post("/v1/chat/completions", json=secret).status_code == 200
        assert (
            b.post("/v1/completions", json={"model": "b", "prompt": "org B's note", "max_tokens": 3}).status_code == 200
        )
        mine = a.get("/v1/prompts").json()["data"]
        assert [p["prompt"] for p in mine] == [secret["messages"]]
        theirs = b.get("/v1/prompts").json()["data"]
        assert [p["prompt"] for p in theirs] == ["org B's note"]
        assert b.get(f"/v1/prompts/{mine[0]['id']}").status_code == 404
        assert a.get(f"/v1/prompts/{mine[0]['id']}").json()["prompt"] == secret["messages"]
        assert "secret" not in b.get("/v1/prompts", params={"limit": 1000}).text


def test_the_rate_limit_per_key(tmp_path, tiny_model_dir):
    with serving(tmp_path, {"a": tiny_model_dir}, ("rate_limit_per_minute=3",)) as s:
        key_1, key_2 = s.key(s.user(s.org())), s.key(s.user(s.org()))
        with api(s, key_1) as one, api(s, key_2) as two:
            codes = [one.get("/v1/models").status_code for _ in range(4)]
            assert codes == [200, 200, 200, 429]
            limited = one.get("/v1/models")
            assert limited.json()["error"]["code"] == "rate_limit_exceeded"
            assert int(limited.headers["retry-after"]) >= 1
            assert two.get("/v1/models").status_code == 200  # another key has its own budget


def test_only_a_loopback_server_answers_without_keys():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5")
    serving_ = Serving(ServeConfig(host="0.0.0.0"), db=None, models={})  # the database is not even asked
    assert serving_.keyless() is False


def test_playground_posts_need_the_sessions_csrf_token(served):
    user = served.user(served.org())
    client, csrf = served.login(user)
    body = {"model": "a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    assert client.post("/playground/chat", json=body).status_code == 403
    assert client.post("/playground/chat", json=body, headers={"x-csrf-token": "forged"}).status_code == 403
    assert client.post("/playground/notice", data={"model": "a"}).status_code == 403
    # with the token: first the notice, then the prompt
    refused = client.post("/playground/chat", json=body, headers={"x-csrf-token": csrf})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "notice_required"
    assert client.post("/playground/notice", data={"model": "a", "csrf_token": csrf}).status_code == 200
    assert client.post("/playground/chat", json=body, headers={"x-csrf-token": csrf}).status_code == 200
    # signed out, nothing
    with httpx.Client(base_url=served.url, timeout=30) as stranger:
        assert stranger.post("/playground/chat", json=body).status_code in (401, 403)


def test_user_text_is_shown_escaped(served):
    user = served.user(served.org())
    client, csrf = served.login(user)
    client.post("/playground/notice", data={"model": "a", "csrf_token": csrf})
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    body = {"model": "a", "messages": [{"role": "user", "content": evil}], "max_tokens": 3}
    assert client.post("/playground/chat", json=body, headers={"x-csrf-token": csrf}).status_code == 200
    page = client.get("/playground/data").text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert evil not in page
