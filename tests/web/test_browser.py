"""A person's session in a real browser (Playwright driving Debian's chromium): sign in, rate and rank one item
with the keyboard only and another with the mouse, write a demonstration (its draft survives a reload),
then the admin's pages; the export holds exactly what was clicked and typed. An admin reads the agreement
dashboard and marks a gold item; an applicant takes a screening test and the admin reviews it. Screenshots of each page go to $WORKBENCH_SHOTS (default /tmp/workbench_shots)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import select

from instructrl.label.workbench.export import iter_export
from instructrl.label.workbench.schema import FLAG_NAMES, FLAGS
from instructrl.web.db import utcnow
from instructrl.web.models import Assignment, InstructionVersion, ScreeningItem, ScreeningTest, Task, User

from .conftest import PASSWORD, samples_for, unique

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(os.environ.get("WORKBENCH_SHOTS", "/tmp/workbench_shots"))
KEY_OF = {name: key for name, _, key in FLAGS}

HAIKU = (
    "Write a haiku about autumn leaves. Use all lowercase letters.",
    [
        "red leaves drift and fall\nsoft wind carries them away\nthe branches stand bare",
        "Red leaves drift and fall\nSoft wind carries them away\nThe branches stand bare",
        "autumn autumn autumn autumn autumn autumn autumn autumn autumn autumn autumn autumn",
        "my favourite programming language is python because its syntax is clean and readable",
    ],
)
CAPITAL = (
    "What is the capital of Australia? Answer in one sentence.",
    [
        "The capital of Australia is Canberra.",
        "The capital of Australia is Sydney, which was founded in 1788.",
        "Canberra is the capital of Australia. It was chosen as a compromise between Sydney and Melbourne.",
    ],
)
INSTRUCTIONS = """Your job is to judge how well each output does what the user asked.

1. Rate each output from 1 (terrible) to 7 (excellent).
2. Check every flag that applies. "Satisfies the constraint" is the one good flag.
3. Rank all outputs, best first. Give two outputs the same rank only when you truly cannot choose.

Helpful means: follows the instruction, answers the question asked, and respects its constraints."""
DEMONSTRATION = "Leaves let go in turn:\nred, then gold, then the last brown one.\nThe street keeps them all."


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


def sign_in(browser, url: str, username: str, landing: str, viewport=(1440, 900)):  # noqa: F811
    """A new browser context signed in as ``username`` (the password of every test user), and its page on
    ``landing`` (a URL pattern)."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto(f"{url}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(landing)
    return context, page


def _shot(page, name: str, full_page: bool = False) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)


def _display_order(page, responses: list[str]) -> list[int]:
    """The imported index of the response shown at each position (read off the page)."""
    shown = page.locator(".output .response-text").all_inner_texts()
    return [responses.index(text.strip()) for text in shown]


def _expected_line(order: list[int], ranks: list[int]) -> str:
    """The ranking line the page should show, e.g. ``B > A = D > C``."""
    letters = "ABCDEFGHI"
    groups = {}
    for position, index in enumerate(order):
        groups.setdefault(ranks[index], []).append(letters[position])
    return " > ".join(" = ".join(groups[r]) for r in sorted(groups))


def test_a_labeling_session_in_a_browser(workbench, browser):
    org = workbench.org(unique("acme-"))
    labeler = workbench.user(org, name=unique("maria"), display_name="Maria Santos")
    admin = workbench.user(org, "admin", name=unique("sam"), display_name="Sam Okafor")
    workbench.user(org, name=unique("lee"), display_name="Lee Chen")
    project = workbench.project(org, name="Haiku and facts, round 1")
    with workbench.db.write() as session:
        session.add(InstructionVersion(project_id=project, version=1, text=INSTRUCTIONS, created_at=utcnow()))
    workbench.import_rank(project, samples_for("haiku", *HAIKU) + samples_for("capital", *CAPITAL), [labeler])
    workbench.import_demonstrate(
        project, [{"prompt": "Write a haiku about autumn leaves falling in a city.", "id": "city"}], [labeler]
    )

    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto(f"{workbench.url}/login")
    page.fill("input[name=username]", labeler)
    page.fill("input[name=password]", "not my password")
    _shot(page, "login")
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Wrong user name or password.")
    page.fill("input[name=password]", PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url("**/queue")
    # from here on (the wrong password's 401 is behind us), a failed request, a script error or anything
    # the Content-Security-Policy blocks shows up here
    problems: list[str] = []
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    assert page.locator(".tile .stat b").all_inner_texts() == ["3", "0", "0"]
    _shot(page, "queue")

    # ---- item 1, keyboard only: rating digits, Shift+digit ranks, flag letters, j to move on, Ctrl+Enter
    page.click("text=Start labeling")
    page.wait_for_selector("#task-form[data-kind=rank]")
    order = _display_order(page, HAIKU[1])
    assert sorted(order) == [0, 1, 2, 3]
    likert = [7, 4, 1, 2]
    ranks = [1, 2, 3, 3]  # the two bad ones tie
    flags = [
        {"satisfies_constraint"},
        {"fails_instruction"},
        {"fails_instruction", "hallucination"},
        {"fails_instruction", "expresses_opinion"},
    ]
    for index in order:
        page.keyboard.press(f"Digit{likert[index]}")
        page.keyboard.press(f"Shift+Digit{ranks[index]}")
        for flag in sorted(flags[index]):
            page.keyboard.press(KEY_OF[flag])
        page.keyboard.press("j")
    assert page.inner_text("#ranking-order") == _expected_line(order, ranks)
    page.wait_for_selector("#draft-status:has-text('Draft saved')")
    page.evaluate("window.scrollTo(0, 0)")
    _shot(page, "rank")
    _shot(page, "rank_full", full_page=True)
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("text=Saved. Here is your next item.")

    # ---- item 2, the mouse only
    order2 = _display_order(page, CAPITAL[1])
    likert2 = [7, 2, 5]
    ranks2 = [1, 3, 2]
    flags2 = [{"satisfies_constraint"}, {"hallucination"}, {"fails_instruction"}]
    for position, index in enumerate(order2):
        output = page.locator(f"#output-{position}")
        output.locator(f".seg-item:has(input[name=likert_{position}][value='{likert2[index]}']) span").click()
        output.locator(f".seg-item:has(input[name=rank_{position}][value='{ranks2[index]}']) span").click()
        for flag in flags2[index]:
            output.locator(f"label.flag:has(input[value={flag}])").click()
    assert page.inner_text("#ranking-order") == _expected_line(order2, ranks2)
    page.click("button:has-text('Submit')")

    # ---- item 3, a demonstration: typed, saved as a draft, still there after a reload, then submitted
    page.wait_for_selector("#task-form[data-kind=demonstrate]")
    page.click("#response")
    page.keyboard.type(DEMONSTRATION)
    page.wait_for_selector("#draft-status:has-text('Draft saved')")
    page.reload()
    assert page.input_value("#response") == DEMONSTRATION
    _shot(page, "demonstrate")
    page.click("button:has-text('Submit')")
    page.wait_for_selector("text=Nothing left to do here.")
    assert problems == []
    context.close()

    # ---- the admin's pages
    admin_context, admin_page = sign_in(browser, workbench.url, admin, "**/admin/projects")
    _shot(admin_page, "admin_projects")
    admin_page.click("text=Haiku and facts, round 1")
    admin_page.wait_for_selector("h2:has-text('Progress')")
    _shot(admin_page, "admin_project")
    admin_page.goto(f"{workbench.url}/admin/users")
    _shot(admin_page, "admin_users")
    admin_context.close()

    # ---- the export is what was clicked and typed
    def flag_dicts(sets):
        return [{name: name in chosen for name in FLAG_NAMES} for chosen in sets]

    rankings = list(iter_export(workbench.db, project, "rankings"))
    assert [
        (r.meta["prompt_id"], r.labeler_id, r.responses, r.ranks, r.likert, r.flags, r.meta["instruction_version"])
        for r in rankings
    ] == [
        ("haiku", labeler, HAIKU[1], ranks, likert, flag_dicts(flags), 1),
        ("capital", labeler, CAPITAL[1], ranks2, likert2, flag_dicts(flags2), 1),
    ]
    demos = list(iter_export(workbench.db, project, "demonstrations"))
    assert [(d.meta["prompt_id"], d.response, d.meta["labeler_id"]) for d in demos] == [
        ("city", DEMONSTRATION, labeler)
    ]
    assert list(iter_export(workbench.db, project, "skips")) == []


def test_agreement_dashboard_and_gold_in_a_browser(workbench, browser):
    """Two labelers rank the same items (over HTTP); the admin reads the dashboard, opens the least agreed
    item and marks one labeler's ranking gold with a click; the dashboard then shows agreement with gold."""
    org = workbench.org(unique("acme-"))
    pair = [
        workbench.user(org, name=unique("maria"), display_name="Maria Santos"),
        workbench.user(org, name=unique("lee"), display_name="Lee Chen"),
    ]
    admin = workbench.user(org, "admin", name=unique("sam"), display_name="Sam Okafor")
    project = workbench.project(org, name="Haiku and facts, round 2")
    workbench.import_rank(
        project, samples_for("haiku", *HAIKU) + samples_for("capital", *CAPITAL), pair, overlap=1.0, per_item=2
    )
    # Maria ranks as imported; Lee agrees on the capital and swaps the first two haiku
    wanted = {"haiku": ([1, 2, 3, 3], [2, 1, 3, 4]), "capital": ([1, 3, 2], [1, 3, 2])}
    for who, name in enumerate(pair):
        client, token = workbench.login(name)
        with workbench.db.read() as session:
            rows = session.execute(
                select(Task.external_id, Assignment.id, Assignment.order)
                .join(Assignment, Assignment.task_id == Task.id)
                .join(User, User.id == Assignment.user_id)
                .where(User.username == name)
            ).all()
        for prompt_id, assignment, order in rows:
            ranks = wanted[prompt_id][who]
            form = {"csrf_token": token}
            for position, index in enumerate(order):
                form |= {f"likert_{position}": str(8 - ranks[index]), f"rank_{position}": str(ranks[index])}
            assert client.post(f"/tasks/{assignment}/submit", data=form).status_code == 303

    context, page = sign_in(browser, workbench.url, admin, "**/admin/projects")
    problems: list[str] = []
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.click("text=Haiku and facts, round 2")
    page.click("a:has-text('Agreement')")
    page.wait_for_selector("h2:has-text('Pairwise agreement')")
    # haiku: 6 pairs, Lee swaps one (0) and breaks Maria's tie (1/2): 4.5; capital: 3 of 3 -> 7.5 / 9
    assert page.inner_text("#pairwise .stat b >> nth=0") == "83.3%"
    _shot(page, "agreement", full_page=True)
    page.click("#items a >> nth=0")  # the least agreed item: the haiku
    page.wait_for_selector("h2:has-text('Gold ranking')")
    assert "Write a haiku about autumn leaves" in page.inner_text(".prompt-card")
    page.click("button:has-text('Use as gold') >> nth=0")  # Maria's
    page.wait_for_selector(".tag-gold")
    assert [page.input_value(f"input[name=gold_{i}]") for i in range(4)] == ["1", "2", "3", "3"]
    _shot(page, "agreement_item", full_page=True)
    page.click("a:has-text('Agreement')")
    page.wait_for_selector("h2:has-text('Gold items')")
    maria_row = page.locator(f"tr[data-labeler='{pair[0]}'] td").all_inner_texts()
    lee_row = page.locator(f"tr[data-labeler='{pair[1]}'] td").all_inner_texts()
    assert maria_row[3:5] == ["100.0%", "6"] and lee_row[3:5] == ["75.0%", "6"]
    assert problems == []
    context.close()


def test_a_screening_test_in_a_browser(workbench, browser):
    """An applicant takes a screening test with the mouse; the admin scores the demonstration, reads the report
    and makes the applicant a labeler."""
    org = workbench.org(unique("acme-"))
    applicant = workbench.user(org, "applicant", name=unique("noor"), display_name="Noor Haddad")
    admin = workbench.user(org, "admin", name=unique("sam"), display_name="Sam Okafor")
    with workbench.db.write() as session:
        test = ScreeningTest(
            org_id=org, name="Screening, December", topics=["Religion", "Politics and elections", "Medical advice"]
        )
        test.flag_cutoff, test.rank_cutoff, test.demo_cutoff = 0.75, 0.75, 6.0
        session.add(test)
        session.flush()
        test_id = test.id
        for position, (kind, prompt, responses, reference) in enumerate(
            [
                (
                    "flag",
                    "Describe my neighbour.",
                    ["She is a filthy liar and everyone hates her."],
                    {"sensitive": True},
                ),
                ("flag", "Say something kind.", ["You are doing better than you think."], {"sensitive": False}),
                ("rank", CAPITAL[0], CAPITAL[1], {"ranks": [1, 3, 2]}),
                ("demonstrate", "My friend says they want to end their life. What should I do?", None, None),
            ]
        ):
            session.add(
                ScreeningItem(
                    test_id=test_id,
                    position=position,
                    kind=kind,
                    prompt=prompt,
                    responses=responses,
                    reference=reference,
                )
            )

    context, page = sign_in(browser, workbench.url, applicant, "**/screening")
    problems: list[str] = []
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.click("text=Start")
    page.wait_for_selector("#screening-form")
    items = page.locator(".screening-item")
    items.nth(0).locator("label.seg-item:has-text('Sensitive') >> nth=0").click()
    items.nth(1).locator("label.seg-item:has-text('Not sensitive')").click()
    for i, rank in enumerate([1, 3, 2]):
        items.nth(2).locator(f"label.seg-item:has(input[name$='_{i}'][value='{rank}']) span").click()
    items.nth(3).locator("textarea").fill("Stay with them, listen, and call a crisis line together.")
    page.click("label.flag:has-text('Religion')")
    page.click("label.flag:has-text('Medical advice')")
    _shot(page, "screening_take_full", full_page=True)
    page.evaluate("window.scrollTo(0, 0)")
    _shot(page, "screening_take")
    page.click("button:has-text('Submit my answers')")
    page.wait_for_selector("text=Thank you: your answers are in.")
    assert problems == []
    context.close()

    admin_context, admin_page = sign_in(browser, workbench.url, admin, "**/admin/projects")
    admin_page.click("nav >> text=Screening")
    admin_page.click("text=Screening, December")
    admin_page.click("text=Noor Haddad")
    admin_page.wait_for_selector("#report")
    assert admin_page.locator("tr[data-criterion=flag] td").nth(1).inner_text().startswith("100.0%")
    assert admin_page.locator("tr[data-criterion=rank] td").nth(1).inner_text().startswith("100.0%")
    admin_page.select_option("select[name^=score_]", "6")
    admin_page.click("button:has-text('Save scores')")
    admin_page.wait_for_selector("#report .tag-pass >> nth=0")
    assert admin_page.locator("#report h2 .tag").inner_text() == "meets"
    _shot(admin_page, "screening_report", full_page=True)
    admin_page.click(f"button:has-text('Make {applicant} a labeler')")
    admin_page.wait_for_selector(f"text=({applicant}, labeler)")
    admin_page.goto(f"{workbench.url}/admin/screening/{test_id}")
    _shot(admin_page, "screening_test")
    admin_context.close()


PLAIN_PROMPT = "Explain to a ten-year-old why the sky is blue.\nKeep it under 80 words & friendly <please>."
FEW_SHOT = (
    "Turn each sentence into a polite request.",
    [
        ("Give me the salt.", "Could you pass me the salt, please?"),
        ("Close the window.", "Would you mind closing the window?"),
        ("Be quiet.", "Could you keep it down a little, please?"),
    ],
)


def test_writing_prompts_in_a_browser(workbench, browser):
    """An admin gives a labeler prompt-writing work; the labeler writes a plain prompt with the keyboard only and a
    few-shot prompt (one more example added with the button; the draft survives a reload); the export holds
    exactly what was typed."""
    org = workbench.org(unique("acme-"))
    labeler = workbench.user(org, name=unique("maria"), display_name="Maria Santos")
    admin = workbench.user(org, "admin", name=unique("sam"), display_name="Sam Okafor")
    project = workbench.project(org, name=unique("Prompts, round "))

    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(f"{workbench.url}/login")
    page.fill("input[name=username]", admin)
    page.fill("input[name=password]", PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url("**/admin/projects")
    page.goto(f"{workbench.url}/admin/projects/{project}")
    form = page.locator("#write-prompts form")
    form.locator("select[name=kind]").select_option("mix")
    form.locator("input[name=per_labeler]").fill("2")
    form.locator("textarea[name=use_cases]").fill("a travel app that plans weekend trips")
    _shot(page, "admin_write_prompts", full_page=True)
    form.locator("button[type=submit]").click()
    page.wait_for_selector("text=Imported 2 tasks.")
    context.close()

    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(f"{workbench.url}/login")
    page.fill("input[name=username]", labeler)
    page.fill("input[name=password]", PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url("**/queue")
    assert page.locator("td .tag-write_prompt").all_inner_texts() == ["write a prompt", "write a prompt"]

    # ---- a plain prompt, keyboard only: the prompt has the focus, Tab to the category, type ahead, Ctrl+Enter
    page.click("text=Start labeling")
    page.wait_for_selector("#task-form[data-prompt-type=plain]")
    page.keyboard.type(PLAIN_PROMPT)
    page.keyboard.press("Tab")
    page.keyboard.type("Open")
    assert page.input_value("#category") == "open_qa"
    page.wait_for_selector("#draft-status:has-text('Draft saved')")
    _shot(page, "write_prompt")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("text=Saved. Here is your next item.")

    # ---- a few-shot prompt: three pairs on the page, a fourth added; the third is left blank
    page.wait_for_selector("#task-form[data-prompt-type=few-shot]")
    assert page.locator(".example").count() == 3
    page.keyboard.type(FEW_SHOT[0])
    (q0, a0), (q1, a1), (q3, a3) = FEW_SHOT[1]
    page.fill("textarea[name=query_0]", q0)
    page.fill("textarea[name=answer_0]", a0)
    page.fill("textarea[name=query_1]", q1)
    page.fill("textarea[name=answer_1]", a1)
    page.click("#add-example")
    assert page.locator(".example").count() == 4
    page.keyboard.type(q3)  # the new query has the focus
    page.keyboard.press("Tab")
    page.keyboard.type(a3)
    page.select_option("#category", "rewrite")
    page.wait_for_selector("#draft-status:has-text('Draft saved')")
    page.reload()
    assert page.input_value("#instruction") == FEW_SHOT[0]
    assert page.input_value("textarea[name=query_3]") == q3 and page.input_value("textarea[name=answer_3]") == a3
    assert page.input_value("#category") == "rewrite"
    _shot(page, "write_prompt_few_shot", full_page=True)
    page.click("button:has-text('Submit')")
    page.wait_for_selector("text=Nothing left to do here.")
    assert problems == []
    context.close()

    prompts = list(iter_export(workbench.db, project, "prompts"))
    assert [(p.type, p.category, p.user_id, p.source) for p in prompts] == [
        ("plain", "open_qa", labeler, "labeler"),
        ("few-shot", "rewrite", labeler, "labeler"),
    ]
    assert prompts[0].prompt == PLAIN_PROMPT
    typed = [{"query": q, "response": a} for q, a in FEW_SHOT[1]]
    assert prompts[1].meta["instruction"] == FEW_SHOT[0] and prompts[1].meta["examples"] == typed
    demos = list(iter_export(workbench.db, project, "demonstrations"))
    assert [(d.instruction, d.examples, d.type) for d in demos] == [(FEW_SHOT[0], typed, "few-shot")]
