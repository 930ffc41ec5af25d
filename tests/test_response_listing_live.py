"""GET /responses (an extension): a key's stored responses newest first, filtered and paged; the
admin key lists every owner's."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest
from harness import KEY_A, KEY_B, ScriptedEngine, ServerProcess, check_response
from openai import OpenAI

ADMIN = "admin-key-secret"


def listing(server: ServerProcess, key: str, **params: object) -> httpx.Response:
    return httpx.get(server.base_url + "/responses", params=params, headers={"authorization": f"Bearer {key}"})


def ids(server: ServerProcess, key: str, **params: object) -> list[str]:
    r = listing(server, key, **params)
    assert r.status_code == 200, r.text
    return [d["id"] for d in r.json()["data"]]


def test_listing_pages_filters_and_owners(either: ServerProcess, script) -> None:
    a = OpenAI(base_url=either.base_url, api_key=KEY_A, max_retries=0)
    b = OpenAI(base_url=either.base_url, api_key=KEY_B, max_retries=0)
    tag = uuid.uuid4().hex  # the shared server holds other tests' responses: filter on this run's
    made = []
    for n in range(5):
        script.add({"content": f"answer {n} <b>{tag}</b>"})
        made.append(a.responses.create(model="m", input=f"question {n}",
                                       metadata={"run": tag, "half": str(n % 2)}).id)
    script.add({"content": "b's answer"})
    theirs = b.responses.create(model="m", input="x", metadata={"run": tag}).id
    newest = made[::-1]

    page = listing(either, KEY_A, **{"metadata[run]": tag, "limit": 2}).json()
    assert [d["id"] for d in page["data"]] == newest[:2] and page["has_more"] is True
    assert page["object"] == "list" and page["first_id"] == newest[0] and page["last_id"] == newest[1]
    for data in page["data"]:
        check_response(data)
    full = a.responses.retrieve(newest[0]).model_dump(mode="json")
    assert check_response(page["data"][0]).model_dump(mode="json") == full
    assert ids(either, KEY_A, **{"metadata[run]": tag, "after": newest[1], "limit": 2}) == newest[2:4]
    assert ids(either, KEY_A, **{"metadata[run]": tag, "before": newest[2], "limit": 1}) == newest[1:2]
    assert ids(either, KEY_A, **{"metadata[run]": tag, "order": "asc"}) == made
    assert ids(either, KEY_A, **{"metadata[run]": tag, "metadata[half]": "1"}) == [made[3], made[1]]
    assert ids(either, KEY_A, search=f"answer 2 <b>{tag}") == [made[2]]
    assert ids(either, KEY_A, **{"metadata[run]": tag, "status": "completed", "model": "m"}) == newest
    assert ids(either, KEY_A, **{"metadata[run]": tag, "model": "other"}) == []
    # Another key sees none of them, even given one as a cursor; its own only.
    assert ids(either, KEY_B, **{"metadata[run]": tag}) == [theirs]
    assert ids(either, KEY_B, after=made[2]) == []
    assert ids(either, KEY_B, search=tag) == []


@pytest.mark.parametrize(("params", "param"), [
    ({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"limit": "x"}, "limit"), ({"order": "up"}, "order"),
    ({"status": "done"}, "status"), ({"created_after": "yesterday"}, "created_after"),
    ({"search": "x" * 513}, "search"),
])
def test_bad_listing_parameters(server: ServerProcess, params: dict, param: str) -> None:
    r = listing(server, KEY_A, **params)
    assert r.status_code == 400 and r.json()["error"]["param"] == param


def test_listing_needs_a_key(server: ServerProcess) -> None:
    assert httpx.get(server.base_url + "/responses").status_code == 401
    assert listing(server, "wrong").status_code == 401


@pytest.fixture(scope="module")
def admin_server(engine: ScriptedEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("admin"), "--upstream-base-url", engine.base_url,
                         "--api-key", KEY_A, "--api-key", KEY_B, "--admin-key", ADMIN)
    proc.start()
    yield proc
    proc.stop()


def test_admin_key_lists_every_owner(admin_server: ServerProcess, script) -> None:
    made = [OpenAI(base_url=admin_server.base_url, api_key=key, max_retries=0).responses.create(
        model="m", input="x", metadata={"who": key}).id for key in (KEY_A, KEY_B)]
    assert ids(admin_server, ADMIN) == made[::-1]
    assert ids(admin_server, KEY_A) == made[:1]
    # Elsewhere it is no API key.
    admin = OpenAI(base_url=admin_server.base_url, api_key=ADMIN, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        admin.responses.create(model="m", input="x")
    with pytest.raises(openai.AuthenticationError):
        admin.responses.retrieve(made[0])
