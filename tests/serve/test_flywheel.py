"""The flywheel on the tiny models: people send prompts through the API and the playground, ``instructrl
curate`` reads the prompt store straight from the database (dedup by long common prefix, the per-user cap,
the split by user), and ``instructrl run`` takes the curated prompts into its own prompt sets. Only prompts
of users who saw the notice for the model, and who (and whose organization) did not opt out, get through.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from instructrl.records import Prompt, read_jsonl
from instructrl.web.prompts import accept_notice
from instructrl.web.users import check_username

from .conftest import ROOT_DIR, serving

PREFIX = "Please write a detailed, friendly and accurate explanation, for a curious reader with no background, of "


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "instructrl.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT_DIR / "src"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )


def send(served, key: str, prompts: list[str]) -> None:
    with httpx.Client(base_url=served.url, headers={"authorization": f"Bearer {key}"}, timeout=60) as client:
        for i, text in enumerate(prompts):
            if i % 2:
                body = {"model": "a", "messages": [{"role": "user", "content": text}], "max_tokens": 2}
                r = client.post("/v1/chat/completions", json=body)
            else:
                r = client.post("/v1/completions", json={"model": "a", "prompt": text, "max_tokens": 2})
            assert r.status_code == 200, r.text


def notice(served, username: str, model: str = "a") -> None:
    with served.db.write() as session:
        from instructrl.web.models import User

        user = session.query(User).filter(User.username == check_username(username)).one()
        accept_notice(session, user.id, model, 1)


def test_prompts_flow_from_the_api_and_playground_into_the_next_run(served, tmp_path, sigkill_when, shared_data):
    # shared_data: the next run (the tiny preset) evaluates on the public data sets; skipped without them
    acme, other = served.org("acme"), served.org("other")
    # alice uses the playground (its notice) and the API; two of her prompts share a 100-character prefix
    alice = served.user(acme, name="alice")
    client, csrf = served.login(alice)
    assert client.post("/playground/notice", data={"model": "a", "csrf_token": csrf}).status_code == 200
    playground = ["How do tides work?", "Why is the sky blue?"]
    for text in playground:
        body = {"model": "a", "messages": [{"role": "user", "content": text}], "max_tokens": 3}
        r = client.post("/playground/chat", json=body, headers={"x-csrf-token": csrf})
        assert r.status_code == 200 and '"done"' in r.text
    send(served, served.key(alice), [PREFIX + "volcanoes.", PREFIX + "volcanoes and earthquakes.", "Hi there, robot"])
    # many more users of acme who saw the notice, five prompts each (the cap below keeps three)
    kept_users = [alice]
    for i in range(12):
        name = served.user(acme, name=f"user{i:02d}")
        notice(served, name)
        send(served, served.key(name), [f"Question {j} from user {i}: what is {i} times {j}?" for j in range(5)])
        kept_users.append(name)
    # bob never saw the notice; carol saw it, then opted out; dave's organization opted out
    bob = served.user(acme, name="bob")
    send(served, served.key(bob), ["bob's unconsented prompt"])
    carol = served.user(acme, name="carol")
    notice(served, carol)
    send(served, served.key(carol), ["carol's prompt before opting out"])
    client, csrf = served.login(carol)
    assert client.post("/playground/data", data={"opt_out": "on", "csrf_token": csrf}).status_code == 303
    dave = served.user(other, name="dave")
    notice(served, dave)
    send(served, served.key(dave), ["dave's prompt"])
    root = served.user(other, role="admin", name="otheradmin")
    client, csrf = served.login(root)
    assert client.post("/playground/data", data={"org_opt_out": "on", "csrf_token": csrf}).status_code == 303

    # curate reads the store by URL
    out = tmp_path / "curated"
    inputs = json.dumps([{"path": served.db_url, "name": "playground"}])
    done = cli(
        "curate",
        f"inputs={inputs}",
        f"run.out_dir={out}",
        "run.progress=false",
        "cap.max_per_user=3",
        "cap.keep=earliest",
        "dedup.prefix_chars=100",
        "lang.detect=false",
        "stats.tokenizer=whitespace",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    curated = {
        s: read_jsonl(out / f"{s}.jsonl", Prompt) for s in ("train", "valid", "test") if (out / f"{s}.jsonl").exists()
    }
    everything = [p for ps in curated.values() for p in ps]
    texts = {p.prompt if isinstance(p.prompt, str) else p.prompt[-1]["content"] for p in everything}
    by_user: dict[str, int] = {}
    for p in everything:
        by_user[p.user_id] = by_user.get(p.user_id, 0) + 1
    assert set(by_user) == set(kept_users)  # no bob, carol or dave
    assert max(by_user.values()) == 3  # the cap
    assert by_user["alice"] == 3  # 5 sent, one dropped by the prefix rule, then the cap
    assert not any(t.startswith(PREFIX + "volcanoes and") for t in texts)  # the later copy of the prefix went
    assert not {"bob's unconsented prompt", "carol's prompt before opting out", "dave's prompt"} & texts
    assert {p.org_id for p in everything} == {"acme"}
    assert {p.source for p in everything} <= {"api", "playground"}
    splits_of = {u: {s for s, ps in curated.items() for p in ps if p.user_id == u} for u in by_user}
    assert all(len(s) == 1 for s in splits_of.values())  # a user sits in one split only

    # the next round: instructrl run takes them (killed once its curate step has shared the prompts out)
    combined = tmp_path / "flywheel_prompts.jsonl"
    combined.write_text(
        "".join(json.dumps(p.__dict__, ensure_ascii=False) + "\n" for p in everything), encoding="utf-8"
    )
    run_out = tmp_path / "run"
    sigkill_when(
        [
            "run",
            "--config",
            str(ROOT_DIR / "configs" / "run" / "tiny.yaml"),
            f"run.out_dir={run_out}",
            "run.progress=false",
            f"data.prompts=[builtin:prompts,{combined}]",
        ],
        run_out / "demo_samples" / "pipeline.json",
    )
    shared = [
        p
        for role in ("sft", "rm", "ppo", "test")
        for p in read_jsonl(run_out / "curate" / "prompts" / f"{role}.jsonl", Prompt)
    ]
    from_playground = {p.id for p in shared} & {p.id for p in everything}
    assert from_playground, "no playground prompt reached the run's prompt sets"
    assert all(p.source in ("api", "playground") for p in shared if p.id in from_playground)


def test_the_store_on_postgresql(postgres_url, tmp_path, tiny_model_dir):
    """The same store on a PostgreSQL server: a key's prompts are stored, read back by its organization only,
    and curate reads them by the server's URL."""
    with serving(tmp_path, {"a": tiny_model_dir}, db_url=postgres_url) as s:
        org = s.org()
        name = s.user(org)
        notice(s, name)
        key = s.key(name)
        texts = [f"postgres prompt {i} of {name}: how do ships float?" for i in range(4)]
        send(s, key, texts)
        other = s.key(s.user(s.org()))
        with httpx.Client(base_url=s.url, headers={"authorization": f"Bearer {other}"}, timeout=60) as client:
            assert client.get("/v1/prompts").json()["data"] == []
        out = tmp_path / "curated"
        inputs = json.dumps([{"path": postgres_url, "name": "pg"}])
        done = cli(
            "curate",
            f"inputs={inputs}",
            f"run.out_dir={out}",
            "run.progress=false",
            "lang.detect=false",
            "stats.tokenizer=whitespace",
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        got = [
            p
            for split in ("train", "valid", "test")
            if (out / f"{split}.jsonl").exists()
            for p in read_jsonl(out / f"{split}.jsonl", Prompt)
        ]
        mine = sorted(
            p.prompt if isinstance(p.prompt, str) else p.prompt[-1]["content"] for p in got if p.user_id == name
        )
        assert mine == sorted(texts)
