"""The web console (/console) in a real browser: Debian's Chromium driven by Playwright, as in
test_computer_use.py (never `playwright install`). The screenshots in docs/console.md are taken
by this run: into docs/images/ with RESPONSA_SCREENSHOTS=1, else into the test's temp dir (so
that an ordinary run leaves the work tree as it was)."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import KEY_A, KEY_B, ScriptedEngine, ServerProcess, wait_for
from openai import OpenAI
from test_vector_stores import Embeddings

ADMIN = "console-admin-secret"
IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
VIEWPORT = {"width": 1200, "height": 760}


@pytest.fixture(scope="module")
def embeddings() -> Iterator[Embeddings]:
    server = Embeddings().start()  # a hashed bag of words (test_vector_stores.py): texts sharing words are close
    yield server
    server.stop()


@pytest.fixture(scope="module")
def console(engine: ScriptedEngine, embeddings: Embeddings,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("console"), "--upstream-base-url", engine.base_url,
                         "--api-key", KEY_A, "--api-key", KEY_B, "--admin-key", ADMIN,
                         "--embeddings-base-url", embeddings.url + "/v1", "--embeddings-model", "hashed")
    proc.start()
    yield proc
    proc.stop()




def expect(locator: Any) -> Any:
    from playwright.sync_api import expect

    return expect(locator)


def signed_in(browser: Any, server: ServerProcess, key: str, **context: Any) -> Any:
    """A new browser tab of its own (cookies apart), signed in to the console with `key`."""
    tab = browser.new_context(viewport=VIEWPORT, **context).new_page()
    tab.goto(server.url + "/console")
    assert tab.url.endswith("/console/signin")
    tab.fill("input[name=key]", key)
    tab.click("button[type=submit]")
    tab.wait_for_url(re.compile(r"/console/responses$"))
    return tab


def api(server: ServerProcess, key: str) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return IMAGES if os.environ.get("RESPONSA_SCREENSHOTS") == "1" else tmp_path_factory.mktemp("screenshots")


def shot(tab: Any, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(folder / name))
    assert (folder / name).stat().st_size > 10_000


def test_find_open_and_follow_a_chain(console: ServerProcess, browser: Any, script, images: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    client = api(console, KEY_A)
    script.add({"content": f"The capital of France is Paris ({tag})."})
    first = client.responses.create(model="m", input=f"What is the capital of France? ({tag})",
                                    metadata={"topic": "geography"})
    script.add({"content": "About two million people live in Paris itself."})
    second = client.responses.create(model="m", input="How many people live there?", previous_response_id=first.id)
    script.add({"content": "Unrelated."})
    client.responses.create(model="m", input="Something else")
    tab = signed_in(browser, console, KEY_A)
    shot(tab, images, "console-responses.png")
    # Find the first by its answer's text, then open it.
    tab.fill("input[name=search]", f"Paris ({tag})")
    tab.click("form.filters button[type=submit]")
    rows = tab.locator("#responses tbody tr")
    assert rows.count() == 1
    assert rows.first.locator("a").inner_text() == first.id
    rows.first.locator("a").click()
    tab.wait_for_url(re.compile(first.id + "$"))
    assert f"The capital of France is Paris ({tag})." in tab.locator("#output").inner_text()
    assert f"What is the capital of France? ({tag})" in tab.locator("#input").inner_text()
    assert tab.locator("a.next").inner_text() == second.id  # the chain forward, from the first
    assert "topic=geography" in tab.inner_text("dl.facts")
    shot(tab, images, "console-response.png")
    # Its chain: both responses, oldest first, from either end.
    tab.click("#chain-link")
    links = tab.locator("section.chain-link h2 a")
    assert links.all_inner_texts() == [first.id, second.id]
    tab.goto(f"{console.url}/console/responses/{second.id}")
    assert tab.locator("#previous").inner_text() == first.id
    tab.click("#chain-link")
    assert links.all_inner_texts() == [first.id, second.id]
    assert "About two million people" in tab.locator("section.chain-link.here").inner_text()
    shot(tab, images, "console-chain.png")
    tab.context.close()


def test_reading_works_without_javascript(console: ServerProcess, browser: Any, script) -> None:
    script.add({"content": "Read me without scripts."})
    made = api(console, KEY_A).responses.create(model="m", input="x")
    tab = signed_in(browser, console, KEY_A, java_script_enabled=False)
    assert made.id in tab.locator("#responses").inner_text()
    tab.click(f"a[href='/console/responses/{made.id}']")
    assert "Read me without scripts." in tab.locator("#output").inner_text()
    tab.context.close()


def test_watch_a_background_run_and_cancel_it(console: ServerProcess, browser: Any, script, images: Path) -> None:
    script.add({"content": " ".join(f"w{i}" for i in range(600)), "delay": 0.03})
    client = api(console, KEY_A)
    run = client.responses.create(model="m", input="Count slowly.", background=True)
    tab = signed_in(browser, console, KEY_A)
    tab.goto(f"{console.url}/console/responses/{run.id}")
    tab.wait_for_selector("#live[data-following=true]")
    # The words arrive in the page as the run stores its events.
    expect(tab.locator("#live-text")).to_contain_text("w20 ")
    assert tab.locator("#live-events tr").count() > 20
    shot(tab, images, "console-live.png")
    tab.click("#cancel")
    tab.wait_for_url(re.compile(run.id + "$"))
    expect(tab.locator("#status")).to_have_text("cancelled")
    assert client.responses.retrieve(run.id).status == "cancelled"
    assert tab.locator("#live").count() == 0 and tab.locator("#cancel").count() == 0
    text = tab.locator("#output .text").inner_text()
    assert text.startswith("w0 w1") and "w599" not in text
    # The raw event stream, as stored.
    tab.click("#events-link")
    types = tab.locator("#events tbody td.mono").all_inner_texts()
    assert types[0] == "response.created" and "response.output_text.delta" in types
    assert "response.completed" not in types  # a cancelled stream just ends (there is no response.cancelled)
    shot(tab, images, "console-events.png")
    tab.context.close()


def test_another_key_sees_nothing_of_the_first(console: ServerProcess, browser: Any, script) -> None:
    script.add({"content": "For key A's eyes only."})
    mine = api(console, KEY_A).responses.create(model="m", input="secret question", metadata={"who": "a"})
    script.add({"content": " ".join(f"w{i}" for i in range(600)), "delay": 0.03})
    running = api(console, KEY_A).responses.create(model="m", input="x", background=True)
    tab = signed_in(browser, console, KEY_B)
    listed = tab.locator("#responses").inner_text()
    assert mine.id not in listed and running.id not in listed
    tab.fill("input[name=search]", "For key A")
    tab.click("form.filters button[type=submit]")
    assert "No responses match" in tab.locator("#responses").inner_text()
    for path in (mine.id, f"{mine.id}/chain", f"{mine.id}/events", f"{running.id}/events.json"):
        answer = tab.goto(f"{console.url}/console/responses/{path}")
        assert answer.status == 404, path
    # Key B's cancel form, aimed at key A's run: not found, and the run goes on.
    tab.goto(f"{console.url}/console/responses")
    answer = tab.request.post(f"{console.url}/console/responses/{running.id}/cancel",
                              form={"csrf": csrf_of(tab)}, headers={"origin": console.url})
    assert answer.status == 404
    assert api(console, KEY_A).responses.retrieve(running.id).status in ("queued", "in_progress")
    api(console, KEY_A).responses.cancel(running.id)
    tab.context.close()
    # The admin key sees both owners' responses, and opens any of them.
    admin = signed_in(browser, console, ADMIN)
    assert mine.id in admin.locator("#responses").inner_text()
    assert admin.locator("#responses th", has_text="Owner").count() == 1
    admin.goto(f"{console.url}/console/responses/{mine.id}")
    assert "For key A's eyes only." in admin.locator("#output").inner_text()
    admin.context.close()


def csrf_of(tab: Any) -> str:
    return tab.locator("input[name=csrf]").first.get_attribute("value")


def csrf_in(html: str) -> str:
    """The CSRF token of a page's form, read without a browser."""
    token = re.search(r'name="csrf" value="([^"]+)"', html)
    assert token is not None, "the page has no form token"
    return token.group(1)


def test_a_script_in_an_answer_stays_text(console: ServerProcess, browser: Any, script) -> None:
    evil = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"><b>bold?</b>'
    script.add({"content": evil})
    made = api(console, KEY_A).responses.create(model="m", input=evil, metadata={"x": "<i>meta</i>"})
    tab = signed_in(browser, console, KEY_A)
    tab.goto(f"{console.url}/console/responses/{made.id}")
    assert tab.locator("#output .text").inner_text() == evil
    assert tab.locator("#input .text").inner_text() == evil
    assert tab.locator("#output b, #output script, #output img").count() == 0
    tab.goto(f"{console.url}/console/responses")
    assert "<script>window.pwned" in tab.locator("#responses").inner_text()
    assert tab.evaluate("window.pwned") is None
    tab.context.close()


# ---- vector stores --------------------------------------------------------------------------------------

TIDES = "Ocean tides are caused by the gravity of the moon and the sun pulling on the sea."


def vector_store(client: OpenAI, name: str, files: dict[str, bytes], **attributes: Any) -> tuple[str, list[str]]:
    """A vector store made through the SDK, with these files, once every file is ingested."""
    fids = [client.files.create(file=(n, data), purpose="assistants").id for n, data in files.items()]
    store = client.vector_stores.create(name=name, expires_after={"anchor": "last_active_at", "days": 7})
    for fid in fids:
        done = client.vector_stores.files.create_and_poll(fid, vector_store_id=store.id, poll_interval_ms=20,
                                                          attributes=attributes)
        assert done.status == "completed", done.last_error
    return store.id, fids


def test_a_vector_store_its_files_and_a_search(console: ServerProcess, browser: Any, images: Path) -> None:
    client = api(console, KEY_A)
    tag = uuid.uuid4().hex[:8]
    store_id, (tides, bread) = vector_store(client, f"notes {tag}", {
        "tides.md": f"# Tides\n\n{TIDES}".encode(),
        "bread.txt": b"Sourdough bread rises because wild yeast ferments the dough.",
    }, topic="science")
    active = client.vector_stores.retrieve(store_id).last_active_at
    # With JavaScript off: the pages are plain links and forms.
    tab = signed_in(browser, console, KEY_A, java_script_enabled=False)
    tab.click("header a[href='/console/vector_stores']")
    row = tab.locator("#vector-stores tbody tr", has_text=store_id)
    assert f"notes {tag}" in row.inner_text() and "2 of 2 ready" in row.inner_text()
    assert "completed" in row.inner_text()
    row.locator("a").click()
    tab.wait_for_url(re.compile(store_id + "$"))
    assert tab.locator("#status").inner_text() == "completed"
    assert "2 completed" in tab.locator("#counts").inner_text()
    files = tab.locator("#vector-files tbody tr")
    assert files.count() == 2
    for fid, name in ((tides, "tides.md"), (bread, "bread.txt")):
        text = files.filter(has_text=fid).inner_text()
        assert name in text and "completed" in text and "topic=science" in text
    tab.fill("#search input[name=q]", "what pulls the sea: the moon")
    tab.click("#search button[type=submit]")
    tab.wait_for_url(re.compile(r"\?q="))
    first = tab.locator("#results .hit").first
    assert "tides.md" in first.inner_text() and tides in first.inner_text()
    assert TIDES in first.locator(".text").inner_text()
    assert 0 < float(first.locator(".score").inner_text()) <= 1
    shot(tab, images, "console-vector-store.png")
    tab.context.close()
    # The console's search reads only: the store's last activity (and so its expiry) stays as it was.
    assert client.vector_stores.retrieve(store_id).last_active_at == active
    # Another key sees none of it: not in its list, and the store's page (with a search) is not found.
    other = signed_in(browser, console, KEY_B)
    other.goto(f"{console.url}/console/vector_stores")
    assert store_id not in other.locator("#vector-stores").inner_text()
    for path in (store_id, f"{store_id}?q=moon", f"{store_id}?owner=x&q=moon"):
        answer = other.goto(f"{console.url}/console/vector_stores/{path}")
        assert answer.status == 404, path
        assert TIDES not in other.content()
    other.goto(f"{console.url}/console/files")
    assert tides not in other.locator("#files").inner_text()
    other.context.close()


def test_a_script_in_a_file_stays_text(console: ServerProcess, browser: Any) -> None:
    evil = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"><b>bold?</b> lighthouse'
    client = api(console, KEY_A)
    store_id, (fid,) = vector_store(client, "<i>named</i>", {"<b>evil</b>.txt": evil.encode()}, note="<u>x</u>")
    tab = signed_in(browser, console, KEY_A)
    tab.goto(f"{console.url}/console/vector_stores")
    assert "<i>named</i>" in tab.locator("#vector-stores").inner_text()
    tab.goto(f"{console.url}/console/vector_stores/{store_id}")
    assert "<b>evil</b>.txt" in tab.locator("#vector-files").inner_text()
    assert "note=<u>x</u>" in tab.locator("#vector-files").inner_text()
    tab.fill("#search input[name=q]", "lighthouse <script>")
    tab.click("#search button[type=submit]")
    hit = tab.locator("#results .hit")
    assert hit.count() == 1 and fid in hit.inner_text()
    assert hit.locator(".text").inner_text() == evil
    assert tab.locator("input[name=q]").input_value() == "lighthouse <script>"
    assert tab.locator("main script, main img, main b, main u, main i").count() == 0
    assert tab.evaluate("window.pwned") is None
    tab.context.close()


def test_vector_store_pages_admin_paging_and_bad_input(console: ServerProcess) -> None:
    a, b = api(console, KEY_A), api(console, KEY_B)
    store_id, (first,) = vector_store(a, "admin view", {"moon.txt": TIDES.encode()})
    b_file = b.files.create(file=("b.txt", b"key b's file"), purpose="user_data").id
    web = session(console, KEY_A)
    assert web.get("/console/vector_stores/vs_unknown").status_code == 404
    assert web.get(f"/console/vector_stores/{store_id}", params={"status": "bogus"}).status_code == 400
    assert web.get(f"/console/vector_stores/{store_id}", params={"q": "x" * 3000}).status_code == 400
    assert "No files failed." in web.get(f"/console/vector_stores/{store_id}", params={"status": "failed"}).text
    # A store's files, 50 a page: the 51st is on the next.
    many = [a.files.create(file=(f"n{i}.txt", f"note number {i}".encode()), purpose="assistants").id
            for i in range(51)]
    batch = a.vector_stores.file_batches.create_and_poll(vector_store_id=store_id, file_ids=many,
                                                         poll_interval_ms=20)
    assert batch.file_counts.completed == 51
    page = web.get(f"/console/vector_stores/{store_id}").text
    shown = re.findall(r'<td class="mono">(file-\w+)</td>', page)
    assert shown == many[::-1][:50]
    more = re.search(r'href="\?([^"]+)" rel="next"', page)
    assert more is not None
    rest = web.get(f"/console/vector_stores/{store_id}?" + more.group(1).replace("&amp;", "&")).text
    assert re.findall(r'<td class="mono">(file-\w+)</td>', rest) == [many[0], first]
    assert 'rel="next"' not in rest
    # The admin key lists every owner's files and vector stores, and opens a store as its owner.
    admin = session(console, ADMIN)
    # Every owner's files, newest first, 50 a page. Files made in the same second are ordered by
    # their (random) ids, so the two looked for may be on any page: follow the pages.
    files, url = "", "/console/files"
    for _ in range(20):
        text = admin.get(url).text
        assert "<th>Owner</th>" in text
        files += text
        older = re.search(r'href="\?([^"]+)" rel="next"', text)
        if older is None:
            break
        url = "/console/files?" + older.group(1).replace("&amp;", "&")
    assert b_file in files and first in files and files.count("<th>Owner</th>") >= 2
    listed = admin.get("/console/vector_stores").text
    opened = re.search(f'href="(/console/vector_stores/{store_id}[^"]*)"', listed)
    assert opened is not None and "<th>Owner</th>" in listed
    page = admin.get(opened.group(1).replace("&amp;", "&") + "&q=gravity+of+the+moon").text
    assert first in page and TIDES in page
    assert admin.get(f"/console/vector_stores/{store_id}").status_code == 404  # no owner named


@pytest.mark.postgres
def test_vector_store_pages_on_postgresql(engine: ScriptedEngine, embeddings: Embeddings, tmp_path: Path) -> None:
    import pg

    url = pg.create_database("responsa_console")
    server = ServerProcess(tmp_path / "data", "--upstream-base-url", engine.base_url, "--database-url", url,
                           "--api-key", KEY_A, "--api-key", KEY_B, "--admin-key", ADMIN,
                           "--embeddings-base-url", embeddings.url + "/v1", "--embeddings-model", "hashed").start()
    try:
        store_id, (fid,) = vector_store(api(server, KEY_A), "on postgres", {"moon.txt": TIDES.encode()})
        b_file = api(server, KEY_B).files.create(file=("b.txt", b"b"), purpose="user_data").id
        web = session(server, KEY_A)
        assert store_id in web.get("/console/vector_stores").text
        page = web.get(f"/console/vector_stores/{store_id}", params={"q": "the moon\x00"}).text
        assert fid in page and TIDES in page and page.count('class="hit-file"') == 1
        for params in ({"after": "file-\x00"}, {"q": "\x00"}, {"status": "completed", "after": "file-x"}):
            assert web.get(f"/console/vector_stores/{store_id}", params=params).status_code == 200, params
        assert session(server, KEY_B).get(f"/console/vector_stores/{store_id}").status_code == 404
        admin = session(server, ADMIN)
        assert b_file in admin.get("/console/files").text and fid in admin.get("/console/files").text
        assert store_id in admin.get("/console/vector_stores").text
        assert admin.get("/console/vector_stores", params={"after": "vs_\x00"}).status_code == 200
        assert admin.get("/console/files", params={"after": "file-\x00"}).status_code == 200
        owned = admin.get(f"/console/vector_stores/{store_id}", params={"owner": "\x00"})
        assert owned.status_code == 404
        # The same for a conversation opened as an owner no row can have (PostgreSQL refuses U+0000).
        conversation = api(server, KEY_A).conversations.create().id
        assert conversation in admin.get("/console/conversations").text
        assert admin.get(f"/console/conversations/{conversation}", params={"owner": "\x00"}).status_code == 404
        for params in ({"after": "msg_\x00"}, {}):
            assert web.get(f"/console/conversations/{conversation}", params=params).status_code == 200, params
    finally:
        server.stop()
        pg.drop_database(url)


# ---- without a browser: sign-in, CSRF and the switches ------------------------------------------------


def session(server: ServerProcess, key: str) -> httpx.Client:
    client = httpx.Client(base_url=server.url)
    answer = client.post("/console/signin", data={"key": key})
    assert answer.status_code == 303 and answer.headers["location"] == "/console/responses"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    assert not key or key not in answer.headers["set-cookie"]
    return client


def test_sign_in_refuses_wrong_keys_and_forged_cookies(console: ServerProcess) -> None:
    answer = httpx.post(console.url + "/console/signin", data={"key": "wrong"})
    assert answer.status_code == 401 and "Incorrect API key" in answer.text and "set-cookie" not in answer.headers
    answer = httpx.post(console.url + "/console/signin", data={"key": KEY_A}, headers={"origin": "http://evil.test"})
    assert answer.status_code == 403 and "set-cookie" not in answer.headers
    for cookie in ("garbage", "A" * 80, ""):
        answer = httpx.get(console.url + "/console/responses", cookies={"responsa_console": cookie})
        assert answer.status_code == 303 and answer.headers["location"] == "/console/signin"
    client = session(console, KEY_A)
    page = client.get("/console/responses")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert KEY_A not in page.text
    # Signing out needs the form's token; then the cookie is gone.
    assert client.post("/console/signout", data={"csrf": "forged"}).status_code == 400
    out = client.post("/console/signout", data={"csrf": csrf_in(page.text)})
    assert out.status_code == 303 and out.headers["location"] == "/console/signin"


def test_cancel_needs_the_csrf_token(console: ServerProcess, script) -> None:
    script.add({"content": " ".join(f"w{i}" for i in range(600)), "delay": 0.03})
    run = api(console, KEY_A).responses.create(model="m", input="x", background=True)
    client = session(console, KEY_A)
    page = client.get(f"/console/responses/{run.id}")
    token = csrf_in(page.text)
    for form in ({}, {"csrf": "forged"}):
        assert client.post(f"/console/responses/{run.id}/cancel", data=form).status_code == 400
    answer = client.post(f"/console/responses/{run.id}/cancel", data={"csrf": token},
                         headers={"origin": "http://evil.test"})
    assert answer.status_code == 400
    assert api(console, KEY_A).responses.retrieve(run.id).status in ("queued", "in_progress")
    answer = client.post(f"/console/responses/{run.id}/cancel", data={"csrf": token})
    assert answer.status_code == 303
    assert api(console, KEY_A).responses.retrieve(run.id).status == "cancelled"
    # The live page's poll: the stored events and the status, as JSON.
    body = client.get(f"/console/responses/{run.id}/events.json", params={"after": 0}).json()
    assert body["status"] == "cancelled" and body["events"][0]["sequence_number"] == 1
    assert client.get(f"/console/responses/{run.id}/events.json", params={"after": "x"}).status_code == 400
    assert httpx.get(f"{console.url}/console/responses/{run.id}/events.json").status_code == 401


def test_the_admin_key_cancels_another_owners_run(console: ServerProcess, script) -> None:
    script.add({"content": " ".join(f"w{i}" for i in range(600)), "delay": 0.03})
    run = api(console, KEY_B).responses.create(model="m", input="x", background=True)
    admin = session(console, ADMIN)
    page = admin.get(f"/console/responses/{run.id}")
    assert 'id="cancel"' in page.text
    assert admin.post(f"/console/responses/{run.id}/cancel", data={"csrf": csrf_in(page.text)}).status_code == 303
    assert api(console, KEY_B).responses.retrieve(run.id).status == "cancelled"
    events = admin.get(f"/console/responses/{run.id}/events.json").json()
    assert events["status"] == "cancelled" and events["events"][0]["type"] == "response.created"


def test_conversations_and_files(console: ServerProcess, script) -> None:
    client = api(console, KEY_A)
    conversation = client.conversations.create(items=[{"type": "message", "role": "user", "content": "Hello <there>"}],
                                               metadata={"project": "demo"})
    script.add({"content": "General Kenobi."})
    made = client.responses.create(model="m", input="And?", conversation=conversation.id)
    uploaded = client.files.create(file=("notes.txt", b"some notes"), purpose="user_data")
    web = session(console, KEY_A)
    page = web.get(f"/console/responses/{made.id}")
    assert f'/console/conversations/{conversation.id}"' in page.text
    found = web.get("/console/conversations", params={"id": conversation.id})
    assert found.status_code == 303 and found.headers["location"] == f"/console/conversations/{conversation.id}"
    page = web.get(f"/console/conversations/{conversation.id}")
    assert page.status_code == 200
    assert "Hello &lt;there&gt;" in page.text and "General Kenobi." in page.text and "project=demo" in page.text
    assert session(console, KEY_B).get(f"/console/conversations/{conversation.id}").status_code == 404
    assert f'href="/console/conversations/{conversation.id}"' in web.get("/console/conversations").text
    assert conversation.id not in session(console, KEY_B).get("/console/conversations").text
    # An admin key lists every owner's conversations and opens them from there.
    admin = session(console, ADMIN)
    listed = admin.get("/console/conversations").text
    opened = re.search(f'href="(/console/conversations/{conversation.id}[^"]*)"', listed)
    assert opened is not None
    assert "General Kenobi." in admin.get(opened.group(1).replace("&amp;", "&")).text
    assert admin.get(f"/console/conversations/{conversation.id}").status_code == 404  # no owner named
    files = web.get("/console/files").text
    assert uploaded.id in files and "notes.txt" in files
    assert uploaded.id not in session(console, KEY_B).get("/console/files").text
    assert 'href="/console/vector_stores"' in files


def test_filters_and_paging(console: ServerProcess, script) -> None:
    client = api(console, KEY_B)
    tag = uuid.uuid4().hex[:8]
    made = [client.responses.create(model="m", input="x", metadata={"batch": tag}).id for _ in range(30)]
    web = session(console, KEY_B)
    first = web.get("/console/responses", params={"meta": f"batch={tag}"}).text
    ids = re.findall(r'class="mono" href="/console/responses/(resp_\w+)"', first)
    assert ids == made[::-1][:25]
    older = re.search(r'href="\?([^"]+)" rel="next"', first)
    assert older is not None and 'rel="prev"' not in first
    second = web.get("/console/responses?" + older.group(1).replace("&amp;", "&")).text
    assert re.findall(r'class="mono" href="/console/responses/(resp_\w+)"', second) == made[::-1][25:]
    newer = re.search(r'href="\?([^"]+)" rel="prev"', second)
    assert newer is not None and 'rel="next"' not in second
    back = web.get("/console/responses?" + newer.group(1).replace("&amp;", "&")).text
    assert re.findall(r'class="mono" href="/console/responses/(resp_\w+)"', back) == made[::-1][:25]
    assert web.get("/console/responses", params={"since": "yesterday"}).status_code == 400
    assert web.get("/console/responses", params={"meta": "novalue"}).status_code == 400
    assert web.get("/console/responses", params={"status": "completed", "until": "2000-01-01"}).text.count(
        'class="mono" href="/console/responses/') == 0


def test_keyless_sign_in_and_store_keys_until_revoked(engine: ScriptedEngine, tmp_path: Path, script) -> None:
    from test_keys import create, keys

    server = ServerProcess(tmp_path / "data", "--upstream-base-url", engine.base_url).start()
    try:
        # A server without keys: every caller is the one local owner, signed in with an empty key.
        script.add({"content": "local answer"})
        made = api(server, "unused").responses.create(model="m", input="x", store=True, background=False)
        keyless = session(server, "")
        assert made.id in keyless.get("/console/responses").text
        store = ["--data-dir", str(server.data_dir)]
        secret, key_id = create(store, "console")
        create(store, "another")  # (with none left in use, the server would be keyless again)
        # Once the store has keys, the keyless session is over; the new key signs in (and owns nothing yet).
        wait_for(lambda: keyless.get("/console/responses").status_code == 303, timeout=10)
        mine = session(server, secret)
        assert made.id not in mine.get("/console/responses").text
        keys("revoke", key_id, *store)
        wait_for(lambda: mine.get("/console/responses").status_code == 303, timeout=10)
    finally:
        server.stop()


def test_a_broken_chain_and_an_unstored_background_run(console: ServerProcess, script) -> None:
    client = api(console, KEY_A)
    script.add({"content": "one"}, {"content": "two"})
    first = client.responses.create(model="m", input="x")
    second = client.responses.create(model="m", input="y", previous_response_id=first.id)
    client.responses.delete(first.id)
    web = session(console, KEY_A)
    chain = web.get(f"/console/responses/{second.id}/chain").text
    assert "no longer stored" in chain and second.id in chain
    script.add({"content": "unstored"})
    run = client.responses.create(model="m", input="x", background=True, store=False)
    wait_for(lambda: client.responses.retrieve(run.id).status == "completed", timeout=10)
    page = web.get(f"/console/responses/{run.id}")
    assert page.status_code == 200 and "No stored input." in page.text and "unstored" in page.text
    assert web.get("/console/responses/resp_unknown").status_code == 404


def test_console_is_off_unless_on_loopback_or_asked(engine: ScriptedEngine, tmp_path: Path) -> None:
    off = ServerProcess(tmp_path / "off", "--upstream-base-url", engine.base_url, "--console", "false").start()
    try:
        assert httpx.get(off.url + "/console/signin").status_code == 404
    finally:
        off.stop()
    wait_for(lambda: off.proc is not None and off.proc.poll() is not None)
