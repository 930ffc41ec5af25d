"""Limits of store keys and projects (quotas.py), and usage per key, model and day (usage.py).

Windows are shortened with --limit-minute so that a test sees one end and the budget come back.
Each window starts with a key's first request after the last one ended, so a test's requests
made well within the window fall in one.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pg
import pytest
from harness import KEY_A, ScriptedEngine, ServerProcess, wait_for
from test_keys import create, keys, sdk
from test_websocket_live import connected, finished, until_end

ADMIN = "admin-key-for-tests"
WINDOW = 8  # seconds, --limit-minute


@pytest.fixture
def server(engine: ScriptedEngine, tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data", "--upstream-base-url", engine.base_url, "--api-key", KEY_A,
                         "--admin-key", ADMIN, "--limit-minute", str(WINDOW), "--usage-flush-interval", "1")
    proc.start()
    yield proc
    proc.stop()


def limited(server: ServerProcess, store: list[str], *limits: str, project: str | None = None) -> tuple[str, str]:
    """(secret, id) of a new key with these `responsa keys create` limit flags, once the server knows it."""
    out = keys("create", "--name", f"k{time.monotonic_ns()}", *(["--project", project] if project else []),
               *limits, *store).stdout
    secret, key_id = out.splitlines()[0], out.split("id: ")[1].split()[0]
    wait_for(lambda: plain(server, secret).status_code != 401, timeout=10)  # SQLite: the 5 s key cache
    return secret, key_id


def plain(server: ServerProcess, key: str, text: str = "hi") -> httpx.Response:
    return httpx.post(server.base_url + "/responses", json={"model": "m", "input": text},
                      headers={"authorization": f"Bearer {key}"}, timeout=30)


def test_request_and_token_limits_answer_429_with_the_hosted_headers(server: ServerProcess, script) -> None:
    store = ["--data-dir", str(server.data_dir)]
    requests_key, _ = limited(server, store, "--requests-per-minute", "2")
    wait_for(lambda: plain(server, requests_key).status_code == 429, timeout=WINDOW * 3)
    refused = plain(server, requests_key)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert "requests per min (RPM): Limit 2" in error["message"]
    headers = refused.headers
    assert headers["x-ratelimit-limit-requests"] == "2" and headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("s") and 1 <= int(headers["retry-after"]) <= WINDOW
    time.sleep(int(headers["retry-after"]))  # the window ends: the budget is back
    back = plain(server, requests_key)
    assert back.status_code == 200 and back.headers["x-ratelimit-remaining-requests"] == "1"

    # Tokens: the usage of each response counts (input + output), as the response reports it.
    tokens_key, _ = limited(server, store, "--tokens-per-minute", "100")
    script.add({"content": "one", "usage": {"prompt_tokens": 60, "completion_tokens": 30}},
               {"content": "two", "usage": {"prompt_tokens": 5, "completion_tokens": 6}})
    first = plain(server, tokens_key)
    assert first.status_code == 200, first.text
    used = first.json()["usage"]["total_tokens"]
    assert used == 90 and first.headers["x-ratelimit-limit-tokens"] == "100"
    second = plain(server, tokens_key)
    assert second.status_code == 200
    left = int(second.headers["x-ratelimit-remaining-tokens"])
    assert left <= 10  # 90 and the probe's few tokens of 100 used
    third = plain(server, tokens_key)
    assert third.status_code == 429 and "tokens per min (TPM): Limit 100" in third.json()["error"]["message"]
    assert third.headers["x-ratelimit-remaining-tokens"] == "0" and third.headers["retry-after"].isdigit()
    time.sleep(int(third.headers["retry-after"]))
    assert plain(server, tokens_key).headers["x-ratelimit-remaining-tokens"] == "100"

    # Per day: the window of --limit-day (a day here) keeps counting past the minute.
    day_key, _ = limited(server, store, "--tokens-per-day", "50")
    script.add({"content": "big", "usage": {"prompt_tokens": 40, "completion_tokens": 20}})
    assert plain(server, day_key).status_code == 200
    refused = plain(server, day_key)
    assert refused.status_code == 429 and "tokens per day (TPD): Limit 50" in refused.json()["error"]["message"]
    assert int(refused.headers["retry-after"]) > WINDOW
    assert plain(server, KEY_A).status_code == 200  # --api-key keys have no limits
    assert "x-ratelimit-limit-requests" not in plain(server, KEY_A).headers


def stream_held(client: openai.OpenAI, gate: str, results: list) -> threading.Thread:
    def run() -> None:
        try:
            with client.responses.stream(model="m", input=f"hold {gate}") as stream:
                results.append(stream.get_final_response().status)
        except Exception as e:
            results.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_stream_and_background_run_limits(server: ServerProcess, engine: ScriptedEngine, script) -> None:
    store = ["--data-dir", str(server.data_dir)]
    secret, _ = limited(server, store, "--streams", "2", "--background-runs", "1")
    client = sdk(server, secret)
    script.add({"content": "held", "gate": "s", "match": "hold s"}, {"content": "held", "gate": "s",
                                                                     "match": "hold s"})
    results: list = []
    threads = [stream_held(client, "s", results) for _ in range(2)]
    wait_for(lambda: sum("hold s" in str(r) for r in engine.requests) >= 2, timeout=20)
    with pytest.raises(openai.RateLimitError) as refused:
        client.responses.create(model="m", input="third", stream=True)
    assert "Too many streams at once for this key: the limit is 2" in refused.value.body["message"]
    assert refused.value.response.headers["retry-after"] == "1"
    assert client.responses.create(model="m", input="plain").status == "completed"  # not a stream
    script.release("s")
    for t in threads:
        t.join(30)
    assert results == ["completed", "completed"]
    # The slots are given back as the streams end.
    wait_for(lambda: _streams_ok(client), timeout=10)

    script.add({"content": "bg", "gate": "b", "match": "hold b"})
    running = client.responses.create(model="m", input="hold b", background=True)
    with pytest.raises(openai.RateLimitError) as refused:
        client.responses.create(model="m", input="second", background=True)
    assert "Too many background runs at once" in refused.value.body["message"]
    script.release("b")
    wait_for(lambda: client.responses.retrieve(running.id).status == "completed", timeout=20)
    wait_for(lambda: _background_ok(client), timeout=10)


def _streams_ok(client: openai.OpenAI) -> bool:
    try:
        with client.responses.stream(model="m", input="again") as stream:
            return stream.get_final_response().status == "completed"
    except openai.RateLimitError:
        return False


def _background_ok(client: openai.OpenAI) -> bool:
    try:
        client.responses.create(model="m", input="again", background=True)
        return True
    except openai.RateLimitError:
        return False


def admin_usage(server: ServerProcess, key: str = ADMIN, **params: str) -> httpx.Response:
    return httpx.get(server.base_url + "/admin/usage", params=params, headers={"authorization": f"Bearer {key}"},
                     timeout=30)


def test_usage_matches_the_responses_and_only_admins_read_it(server: ServerProcess, script) -> None:
    store = ["--data-dir", str(server.data_dir)]
    secret, key_id = limited(server, store, project="lab")
    client = sdk(server, secret)
    script.add({"content": "a", "usage": {"prompt_tokens": 11, "completion_tokens": 7, "cached_tokens": 3,
                                          "reasoning_tokens": 2}},
               {"content": "b", "usage": {"prompt_tokens": 5, "completion_tokens": 4}},
               {"content": "c", "usage": {"prompt_tokens": 8, "completion_tokens": 1, "cached_tokens": 8}},
               {"content": "d", "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
               {"status": 400, "error": "the engine refused it"})
    made = [client.responses.create(model="counted-model", input="one")]
    with client.responses.stream(model="counted-model", input="two") as stream:
        made.append(stream.get_final_response())
    bg = client.responses.create(model="counted-model", input="three", background=True)
    wait_for(lambda: client.responses.retrieve(bg.id).status == "completed", timeout=20)
    made.append(client.responses.retrieve(bg.id))
    with connected(client) as conn:  # a WebSocket response counts for the key of its handshake
        conn.response.create(model="counted-model", input="over the socket")
        made.append(finished(until_end(conn)))
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="counted-model", input="four")
    expected = {"requests": 5, "errors": 1,
                "input_tokens": sum(r.usage.input_tokens for r in made),
                "output_tokens": sum(r.usage.output_tokens for r in made),
                "cached_tokens": sum(r.usage.input_tokens_details.cached_tokens for r in made),
                "reasoning_tokens": sum(r.usage.output_tokens_details.reasoning_tokens for r in made)}
    assert expected["input_tokens"] == 27 and expected["cached_tokens"] == 11 and expected["reasoning_tokens"] == 2

    answer = admin_usage(server, project="lab")
    assert answer.status_code == 200, answer.text
    rows = [r for r in answer.json()["data"] if r["model"] == "counted-model"]
    assert len(rows) == 1 and rows[0]["key"] == key_id and rows[0]["project"] == "lab"
    assert {k: rows[0][k] for k in expected} == expected
    # The command reads the same numbers from the store (flushed by the admin read above).
    out = subprocess.run([sys.executable, "-m", "responsa", "usage", "--project", "lab", *store],
                         capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    assert out[0].split("\t") == ["day", "key", "project", "model", "requests", "input_tokens", "output_tokens",
                                  "cached_tokens", "reasoning_tokens", "errors"]
    line = next(x for x in out if "counted-model" in x).split("\t")
    assert line[1:4] == [key_id, "lab", "counted-model"]
    assert [int(v) for v in line[4:]] == [expected[k] for k in ("requests", "input_tokens", "output_tokens",
                                                                "cached_tokens", "reasoning_tokens", "errors")]
    # Only admin keys: an API key (store or --api-key) gets 403, none gets 401.
    for key in (secret, KEY_A):
        refused = admin_usage(server, key=key)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "insufficient_permissions"
    assert httpx.get(server.base_url + "/admin/usage").status_code == 401
    bad = admin_usage(server, since="yesterday")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "since"


def test_limits_and_usage_hold_across_two_replicas(engine: ScriptedEngine, script, tmp_path: Path) -> None:
    url = pg.create_database("responsa_quotas")
    replicas = [ServerProcess(tmp_path / name, "--database-url", url, "--upstream-base-url", engine.base_url,
                              "--api-key", KEY_A, "--database-pool-size", "2", "--admin-key", ADMIN,
                              "--limit-minute", str(WINDOW), "--usage-flush-interval", "1")
                for name in ("a", "b")]
    try:
        for r in replicas:
            r.start()
        a, b = replicas
        store = ["--database-url", url]
        secret, _ = create(store, "shared", project="team")
        other, _ = create(store, "teammate", project="team")
        keys("limits", "--project", "team", "--tokens-per-minute", "100", "--streams", "1", *store)
        for r in replicas:  # told by the command (NOTIFY)
            wait_for(lambda r=r: "x-ratelimit-limit-tokens" in plain(r, secret).headers, timeout=10)
        # Tokens used through A count on B: the project's budget is one, for all its keys.
        script.add({"content": "big", "usage": {"prompt_tokens": 70, "completion_tokens": 40}})
        assert plain(a, secret).status_code == 200
        refused = plain(b, other)
        assert refused.status_code == 429 and "tokens per min (TPM): Limit 100" in refused.json()["error"]["message"]
        time.sleep(int(refused.headers["retry-after"]))  # the window ends
        # One stream at once for the project, whichever replica serves it.
        script.add({"content": "held", "gate": "r", "match": "hold r"})
        results: list = []
        held = stream_held(sdk(a, secret), "r", results)
        wait_for(lambda: any("hold r" in str(r) for r in engine.requests), timeout=20)
        with pytest.raises(openai.RateLimitError):
            sdk(b, other).responses.create(model="m", input="second stream", stream=True)
        script.release("r")
        held.join(30)
        assert results == ["completed"]
        # Usage from both replicas adds up in the store; either one's admin endpoint reads it.
        made = sdk(b, other).responses.create(model="m2", input="counted on b")
        made_a = sdk(a, other).responses.create(model="m2", input="counted on a")

        def on_m2() -> list:
            rows = [r for r in admin_usage(a, project="team").json()["data"] if r["model"] == "m2"]
            return rows if rows and rows[0]["requests"] == 2 else []

        rows = wait_for(on_m2, timeout=10)
        assert rows[0]["input_tokens"] == made.usage.input_tokens + made_a.usage.input_tokens
        assert rows[0]["output_tokens"] == made.usage.output_tokens + made_a.usage.output_tokens
    finally:
        for r in replicas:
            r.stop()
        pg.drop_database(url)


def test_a_websocket_counts_its_handshake_and_each_response(server: ServerProcess, script) -> None:
    store = ["--data-dir", str(server.data_dir)]
    secret, _ = limited(server, store, "--requests-per-minute", "3")  # the probe is the first request
    with connected(sdk(server, secret)) as conn:  # the second
        conn.response.create(model="m", input="one")  # the third
        assert until_end(conn)[-1].type == "response.completed"
        conn.response.create(model="m", input="two")  # one too many
        refused = until_end(conn)[-1]
    assert refused.type == "error", refused
    assert refused.error.code == "rate_limit_exceeded" and "(RPM): Limit 3" in refused.error.message


def test_usage_days_turn_at_utc_midnight(monkeypatch: pytest.MonkeyPatch) -> None:
    from responsa import usage

    clock = [86400 * 20000 - 1.5]  # 1.5 s before 2024-10-04 00:00 UTC
    monkeypatch.setattr(usage.time, "time", lambda: clock[0])
    assert usage.today() == "2024-10-03"
    clock[0] += 1
    assert usage.today() == "2024-10-03"  # the same day's string, formatted once
    clock[0] += 1
    assert usage.today() == "2024-10-04"
