"""Files API, image input and file input, through the official SDK against live servers.

The shared server's upstream is the scripted engine on loopback: a text-only engine for
files (its text is extracted) that passes image URLs through. Two more servers cover the
other configurations: a file-taking engine with downloaded image URLs and a small size cap,
and the download mode without --allow-private-network (the guard refuses loopback).
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
import openai
import pytest
from harness import KEY_A, ScriptedEngine, ServerProcess, ThreadServer, check_response, wire
from openai import OpenAI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

PDF_LINES = ["Quarterly report", "Revenue grew 42 percent"]


def png(width: int = 2, height: int = 2, rgb: tuple[int, int, int] = (200, 30, 30), pad: int = 0) -> bytes:
    """A real PNG (solid colour); `pad` adds an ancillary chunk to make it bigger."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    extra = chunk(b"tEXt", b"pad\x00" + b"x" * pad) if pad else b""
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + extra + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def pdf(lines: list[str]) -> bytes:
    """A real one-page PDF with a text layer, written by hand (offsets and xref computed)."""
    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    stream = "BT /F1 12 Tf 72 720 Td 16 TL " + " ".join(f"({esc(line)}) Tj T*" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for n, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n{obj}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{off:010d} 00000 n \n".encode() for off in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def user_parts(request: dict) -> str | list[dict]:
    """The content of the last user message the engine was sent."""
    return [m for m in request["messages"] if m["role"] == "user"][-1]["content"]


# ---- fixtures ---------------------------------------------------------------------------------

class MediaHost(ThreadServer):
    """A loopback HTTP server with an image, a big image and a PDF; counts the hits."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.image = png(3, 3, (10, 200, 10))
        files = {"/cat.png": (self.image, "image/png"), "/big.png": (png(pad=80_000), "image/png"),
                 "/doc.pdf": (pdf(PDF_LINES), "application/pdf")}

        async def serve(request: Request) -> Response:
            self.hits.append(request.url.path)
            data, mime = files[request.url.path]
            return Response(data, media_type=mime)

        async def redirect(request: Request) -> Response:
            self.hits.append(request.url.path)
            return Response(status_code=302, headers={"location": request.query_params["to"]})

        super().__init__(Starlette(routes=[*(Route(path, serve) for path in files), Route("/redirect", redirect)]))

    def redirect(self, target: str) -> str:
        return self.url("/redirect?" + urlencode({"to": target}))

    def url(self, path: str) -> str:  # type: ignore[override]
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module")
def host() -> Iterator[MediaHost]:
    server = MediaHost().start()
    yield server
    server.stop()


@pytest.fixture
def hits(host: MediaHost) -> list[str]:
    host.hits.clear()
    return host.hits


class PrivateHost(ThreadServer):
    """What must never be fetched: a server on another loopback address (127.0.0.2), standing in for
    the cloud metadata service or an internal admin page."""

    SECRET = "instance-credentials-7c1f"

    def __init__(self) -> None:
        self.hits: list[str] = []

        async def serve(request: Request) -> Response:
            self.hits.append(request.url.path)
            if request.url.path.endswith(".png"):
                return Response(png(), media_type="image/png")
            return Response(self.SECRET, media_type="text/plain")

        super().__init__(Starlette(routes=[Route("/{name}", serve)]), host="127.0.0.2")


@pytest.fixture(scope="module")
def private_host() -> Iterator[PrivateHost]:
    server = PrivateHost().start()
    yield server
    server.stop()


def _server(tmp_path_factory: pytest.TempPathFactory, engine: ScriptedEngine, name: str, *args: str,
            config: str | None = None) -> ServerProcess:
    data_dir = tmp_path_factory.mktemp(name)
    extra: list[str] = []
    if config is not None:
        path = data_dir / "responsa.toml"
        path.write_text(config.replace("ENGINE", engine.base_url))
        extra = ["--config", str(path)]
    return ServerProcess(data_dir, "--api-key", KEY_A, *extra, *args).start()


@pytest.fixture(scope="module")
def file_server(tmp_path_factory: pytest.TempPathFactory, engine: ScriptedEngine) -> Iterator[ServerProcess]:
    """An engine that takes files (`files = "pass"`), a text-only-images route, downloads, a 64k cap."""
    config = """
[backends.docs]
base_url = "ENGINE"
files = "pass"

[backends.blind]
base_url = "ENGINE"
images = false

[models]
"blind-model" = "blind"
"*" = "docs"
"""
    proc = _server(tmp_path_factory, engine, "files-pass", "--max-file-size", "64k", "--fetch-image-urls",
                   "--allow-private-network", config=config)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory: pytest.TempPathFactory,
                   engine: ScriptedEngine) -> Iterator[ServerProcess]:
    """Downloads image URLs, without --allow-private-network."""
    proc = _server(tmp_path_factory, engine, "files-guarded", "--upstream-base-url", engine.base_url,
                   "--fetch-image-urls")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def allowlist_server(tmp_path_factory: pytest.TempPathFactory,
                     engine: ScriptedEngine) -> Iterator[ServerProcess]:
    """Downloads image URLs and may reach 127.0.0.1 (where MediaHost is) but no other private address."""
    proc = _server(tmp_path_factory, engine, "files-allowlist", "--upstream-base-url", engine.base_url,
                   "--fetch-image-urls", "--allow-private-address", "127.0.0.1")
    yield proc
    proc.stop()


def _client(server: ServerProcess) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0)


# ---- the Files API ----------------------------------------------------------------------------

def test_file_lifecycle(client: OpenAI, azure_client) -> None:
    image = png()
    created = client.files.create(file=("cat.png", image, "image/png"), purpose="vision")
    assert created.id.startswith("file-") and created.object == "file"
    assert created.bytes == len(image) and created.filename == "cat.png" and created.purpose == "vision"
    assert created.status == "processed" and created.expires_at is None
    assert client.files.retrieve(created.id).model_dump() == created.model_dump()
    content = client.files.content(created.id)
    assert content.content == image and content.response.headers["content-type"] == "image/png"
    # The Azure URL form serves the same files.
    assert azure_client.files.retrieve(created.id).id == created.id
    assert client.files.delete(created.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(created.id)
    with pytest.raises(openai.NotFoundError):
        client.files.delete(created.id)


def test_list_filter_and_pagination(client: OpenAI) -> None:
    ids = [client.files.create(file=(f"n{i}.txt", f"note {i}".encode(), "text/plain"), purpose="user_data").id
           for i in range(3)]
    image = client.files.create(file=("i.png", png(), "image/png"), purpose="vision").id
    first = client.files.list(limit=2, purpose="user_data")
    assert len(first.data) == 2 and first.has_more is True
    # The SDK pages on with `after`; each file comes exactly once (same-second uploads tie on
    # created_at and are then ordered by id).
    paged = [f.id for f in client.files.list(limit=2, purpose="user_data")]
    assert len(paged) == len(set(paged)) and set(ids) <= set(paged)
    assert [f.id for f in client.files.list(purpose="user_data", order="asc")] == paged[::-1]
    assert image not in [f.id for f in client.files.list(purpose="user_data")]
    assert image in [f.id for f in client.files.list(purpose="vision")]


def test_expires_after(client: OpenAI) -> None:
    f = client.files.create(file=("t.txt", b"x", "text/plain"), purpose="user_data",
                            expires_after={"anchor": "created_at", "seconds": 3600})
    assert f.expires_at == f.created_at + 3600
    with pytest.raises(openai.BadRequestError) as e:
        client.files.create(file=("t.txt", b"x", "text/plain"), purpose="user_data",
                            expires_after={"anchor": "created_at", "seconds": 5})
    assert e.value.param == "expires_after.seconds"


def test_upload_errors(server: ServerProcess, client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.files.create(file=("a.txt", b"hi", "text/plain"), purpose="nonsense")  # type: ignore[arg-type]
    assert e.value.status_code == 400 and e.value.param == "purpose"
    with pytest.raises(openai.BadRequestError) as e:
        client.files.create(file=("a.txt", b"", "text/plain"), purpose="user_data")
    assert e.value.param == "file" and e.value.code == "empty_file"
    url = server.base_url + "/files"
    auth = {"Authorization": f"Bearer {KEY_A}"}
    cases = [
        {"data": {"purpose": "user_data"}, "files": {"other": ("a.txt", b"hi")}},  # no file part
        {"data": {"purpose": "user_data", "file": "not a file"}, "files": {"x": ("a.txt", b"hi")}},
    ]
    for case in cases:
        r = httpx.post(url, headers=auth, **case)
        assert r.status_code == 400 and r.json()["error"]["param"] == "file", r.text
    r = httpx.post(url, headers=auth, files={"file": ("a.txt", b"hi")})  # no purpose
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"
    r = httpx.post(url, headers=auth, json={"purpose": "user_data"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    r = httpx.post(url, headers={"Authorization": "Bearer wrong"}, files={"file": ("a.txt", b"hi")},
                   data={"purpose": "user_data"})
    assert r.status_code == 401


def test_owner_isolation(client: OpenAI, other_client: OpenAI, script) -> None:
    f = client.files.create(file=("cat.png", png(), "image/png"), purpose="vision")
    for call in (other_client.files.retrieve, other_client.files.content, other_client.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(f.id)
    assert f.id not in [x.id for x in other_client.files.list()]
    for part in ({"type": "input_image", "file_id": f.id}, {"type": "input_file", "file_id": f.id}):
        with pytest.raises(openai.NotFoundError) as e:
            other_client.responses.create(model="m", input=[{"role": "user", "content": [part]}])
        assert e.value.param == "input[0].content[0].file_id"
    assert script.requests == []  # nothing reached the engine
    assert client.files.retrieve(f.id).id == f.id  # the other key's delete did nothing


# ---- images -----------------------------------------------------------------------------------

def test_image_by_file_id(client: OpenAI, script) -> None:
    image = png()
    f = client.files.create(file=("cat.png", image, "image/png"), purpose="vision")
    r = client.responses.create(model="m", input=[{"role": "user", "content": [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "file_id": f.id, "detail": "high"}]}])
    check_response(r)
    assert user_parts(script.requests[-1]) == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(image), "detail": "high"}}]
    # Stored as given; `include` adds the image as a data URL.
    stored = wire(client.responses.input_items.list(r.id).data[0])["content"][1]
    assert stored["file_id"] == f.id and not stored.get("image_url")
    include = ["message.input_image.image_url"]
    included = wire(client.responses.input_items.list(r.id, include=include).data[0])
    assert included["content"][1]["image_url"] == "data:image/png;base64," + b64(image)
    check_response(client.responses.retrieve(r.id, include=["message.input_image.image_url"]))


def test_base64_image_and_url_passed_through(client: OpenAI, script, host: MediaHost,
                                             hits: list[str]) -> None:
    inline = "data:image/png;base64," + b64(png())
    url = host.url("/cat.png")
    client.responses.create(model="m", input=[{"role": "user", "content": [
        {"type": "input_image", "image_url": inline, "detail": "low"},
        {"type": "input_image", "image_url": url}]}])
    assert user_parts(script.requests[-1]) == [
        {"type": "image_url", "image_url": {"url": inline, "detail": "low"}},
        {"type": "image_url", "image_url": {"url": url}}]
    assert hits == []  # passed as is: the engine fetches it, not this server


@pytest.mark.parametrize(("image_url", "code"), [
    ("data:image/png;base64,@@not-base64@@", "invalid_base64_image"),
    ("data:text/plain;base64," + b64(b"hello"), "unsupported_image_media_type"),
    ("data:image/png,rawdata", "invalid_base64_image"),
])
def test_bad_inline_image(client: OpenAI, script, image_url: str, code: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="m", input=[{"role": "user", "content": [
            {"type": "input_text", "text": "see"}, {"type": "input_image", "image_url": image_url}]}])
    assert e.value.param == "input[0].content[1].image_url" and e.value.code == code
    assert script.requests == []


def test_non_image_file_as_image(client: OpenAI) -> None:
    f = client.files.create(file=("doc.pdf", pdf(PDF_LINES), "application/pdf"), purpose="user_data")
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="m", input=[{"role": "user", "content": [
            {"type": "input_image", "file_id": f.id}]}])
    assert e.value.param == "input[0].content[0].file_id" and e.value.code == "unsupported_image_media_type"


def test_chain_history_is_resolved_but_stored_as_given(client: OpenAI, script) -> None:
    image = png(1, 1)
    f = client.files.create(file=("dot.png", image, "image/png"), purpose="vision")
    r1 = client.responses.create(model="m", input=[{"role": "user", "content": [
        {"type": "input_text", "text": "look"}, {"type": "input_image", "file_id": f.id}]}])
    client.responses.create(model="m", input="and now?", previous_response_id=r1.id)
    first_user = script.requests[-1]["messages"][0]
    assert first_user["content"][1] == {"type": "image_url",
                                        "image_url": {"url": "data:image/png;base64," + b64(image)}}
    assert wire(client.responses.input_items.list(r1.id).data[0])["content"][1]["file_id"] == f.id


def test_deleted_file_leaves_response_readable(client: OpenAI, script) -> None:
    f = client.files.create(file=("dot.png", png(), "image/png"), purpose="vision")
    r1 = client.responses.create(model="m", input=[{"role": "user", "content": [
        {"type": "input_text", "text": "look"}, {"type": "input_image", "file_id": f.id}]}])
    client.files.delete(f.id)
    check_response(client.responses.retrieve(r1.id))
    for include in ([], ["message.input_image.image_url"]):
        part = wire(client.responses.input_items.list(r1.id, include=include).data[0])["content"][1]
        assert part["file_id"] == f.id and not part.get("image_url")
    # The chain goes on; the engine is told the file is gone.
    r2 = client.responses.create(model="m", input="still there?", previous_response_id=r1.id)
    assert r2.status == "completed"
    note = f"[The file {f.id} that was here has been deleted.]"
    assert script.requests[-1]["messages"][0]["content"] == f"look\n{note}"
    # As new input, a deleted file is a 404.
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.create(model="m", input=[{"role": "user", "content": [
            {"type": "input_image", "file_id": f.id}]}])
    assert e.value.param == "input[0].content[0].file_id"


def test_image_in_function_call_output(client: OpenAI, script) -> None:
    image = png()
    f = client.files.create(file=("shot.png", image, "image/png"), purpose="vision")
    client.responses.create(model="m", input=[
        {"type": "function_call", "call_id": "c1", "name": "screenshot", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": [
            {"type": "input_text", "text": "here"}, {"type": "input_image", "file_id": f.id}]}])
    messages = script.requests[-1]["messages"]
    assert messages[1] == {"role": "tool", "tool_call_id": "c1", "content": "here"}
    assert messages[2]["content"][0]["image_url"]["url"] == "data:image/png;base64," + b64(image)


def test_screenshot_by_file_id(client: OpenAI, script) -> None:
    image = png(4, 4)
    f = client.files.create(file=("screen.png", image, "image/png"), purpose="vision")
    client.responses.create(model="m", input=[
        {"type": "computer_call", "call_id": "cu1", "action": {"type": "screenshot"}, "status": "completed"},
        {"type": "computer_call_output", "call_id": "cu1", "output": {"type": "computer_screenshot",
                                                                      "file_id": f.id}}])
    messages = script.requests[-1]["messages"]
    assert messages[-1]["content"][0]["image_url"]["url"] == "data:image/png;base64," + b64(image)


# ---- files for a text-only engine ---------------------------------------------------------------

def test_pdf_reaches_text_only_engine_as_text(client: OpenAI, script) -> None:
    document = pdf(PDF_LINES)
    uploaded = client.files.create(file=("report.pdf", document, "application/pdf"), purpose="user_data")
    parts = [
        {"type": "input_file", "filename": "report.pdf",
         "file_data": "data:application/pdf;base64," + b64(document)},
        {"type": "input_file", "filename": "raw.pdf", "file_data": b64(document)},  # bare base64
        {"type": "input_file", "file_id": uploaded.id},
    ]
    for part in parts:
        r = client.responses.create(model="m", input=[{"role": "user", "content": [
            {"type": "input_text", "text": "Summarise"}, part]}])
        check_response(r)
        sent = user_parts(script.requests[-1])
        name = part.get("filename", "report.pdf")
        assert sent == f'Summarise\nContents of the file "{name}":\n\n' + "\n".join(PDF_LINES)
        stored = wire(client.responses.input_items.list(r.id).data[0])["content"][1]
        assert stored == {**part, "type": "input_file"}  # the stored item keeps what was sent
    # A later turn of the conversation sends the text again (cached, not extracted again).
    client.responses.create(model="m", input="and the costs?", previous_response_id=r.id)
    history = script.requests[-1]["messages"]
    assert history[0]["content"] == 'Summarise\nContents of the file "report.pdf":\n\n' + "\n".join(PDF_LINES)
    assert history[-1] == {"role": "user", "content": "and the costs?"}


def test_text_file_and_unsupported_formats(client: OpenAI, script) -> None:
    notes = client.files.create(file=("notes.md", "# Notes\ncafé ☕".encode(), "application/octet-stream"),
                                purpose="user_data")
    client.responses.create(model="m", input=[{"role": "user", "content": [
        {"type": "input_file", "file_id": notes.id}]}])
    assert user_parts(script.requests[-1]) == 'Contents of the file "notes.md":\n\n# Notes\ncafé ☕'
    image = client.files.create(file=("cat.png", png(), "image/png"), purpose="user_data")
    blank = client.files.create(file=("blank.pdf", pdf([]), "application/pdf"), purpose="user_data")
    broken = "data:application/pdf;base64," + b64(b"%PDF-1.4 this is not really a pdf")
    cases = [({"file_id": image.id}, "file_id"), ({"file_id": blank.id}, "file_id"),
             ({"file_data": broken, "filename": "x.pdf"}, "file_data"),
             ({"file_data": "data:application/octet-stream;base64," + b64(b"\x00\x01binary"),
               "filename": "a.bin"}, "file_data")]
    for part, key in cases:
        with pytest.raises(openai.BadRequestError) as e:
            client.responses.create(model="m", input=[{"role": "user", "content": [
                {"type": "input_text", "text": "read"}, {"type": "input_file", **part}]}])
        assert e.value.param == f"input[0].content[1].{key}" and e.value.code == "unsupported_file", part


def test_file_url_is_guarded(client: OpenAI, script, host: MediaHost, hits: list[str]) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="m", input=[{"role": "user", "content": [
            {"type": "input_file", "file_url": host.url("/doc.pdf")}]}])
    assert e.value.param == "input[0].content[0].file_url" and e.value.code == "url_not_allowed"
    assert hits == [] and script.requests == []


# ---- an engine that takes files, downloads and the size cap -----------------------------------------

def test_files_passed_to_file_engine(file_server: ServerProcess, script, host: MediaHost,
                                     hits: list[str]) -> None:
    c = _client(file_server)
    document = pdf(PDF_LINES)
    f = c.files.create(file=("report.pdf", document, "application/pdf"), purpose="user_data")
    c.responses.create(model="gpt-4.1", input=[{"role": "user", "content": [
        {"type": "input_text", "text": "Read these"}, {"type": "input_file", "file_id": f.id},
        {"type": "input_file", "file_url": host.url("/doc.pdf")}]}])
    url = "data:application/pdf;base64," + b64(document)
    assert user_parts(script.requests[-1]) == [
        {"type": "text", "text": "Read these"},
        {"type": "file", "file": {"file_data": url, "filename": "report.pdf"}},
        {"type": "file", "file": {"file_data": url, "filename": "doc.pdf"}}]
    assert hits == ["/doc.pdf"]


def test_image_url_downloaded_and_inlined(file_server: ServerProcess, script, host: MediaHost,
                                          hits: list[str]) -> None:
    c = _client(file_server)
    r = c.responses.create(model="gpt-4.1", input=[{"role": "user", "content": [
        {"type": "input_image", "image_url": host.url("/cat.png"), "detail": "low"}]}])
    assert user_parts(script.requests[-1]) == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(host.image),
                                            "detail": "low"}}]
    assert hits == ["/cat.png"]
    assert wire(c.responses.input_items.list(r.id).data[0])["content"][0]["image_url"] == host.url("/cat.png")
    with pytest.raises(openai.BadRequestError) as e:  # larger than --max-file-size
        c.responses.create(model="gpt-4.1", input=[{"role": "user", "content": [
            {"type": "input_image", "image_url": host.url("/big.png")}]}])
    assert e.value.param == "input[0].content[0].image_url" and e.value.code == "file_too_large"


def test_upload_size_cap(file_server: ServerProcess, script) -> None:
    c = _client(file_server)
    cap = 64 * 1024
    assert c.files.create(file=("ok.bin", b"a" * cap, "application/octet-stream"), purpose="user_data")
    with pytest.raises(openai.APIStatusError) as e:
        c.files.create(file=("big.bin", b"a" * (cap + 1), "application/octet-stream"), purpose="user_data")
    assert e.value.status_code == 413 and e.value.param == "file" and e.value.code == "file_too_large"
    # Without a content-length (chunked), the cap holds while reading.
    def body() -> Iterator[bytes]:
        yield b"--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nuser_data\r\n"
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n\r\n"
        for _ in range(200):
            yield b"a" * 1024
        yield b"\r\n--b--\r\n"

    headers = {"Authorization": f"Bearer {KEY_A}", "Content-Type": "multipart/form-data; boundary=b"}
    r = httpx.post(file_server.base_url + "/files", content=body(), headers=headers)
    assert r.status_code == 413 and r.json()["error"]["param"] == "file"


def test_model_without_images_refuses_them(file_server: ServerProcess, script) -> None:
    c = _client(file_server)
    with pytest.raises(openai.BadRequestError) as e:
        c.responses.create(model="blind-model", input=[{"role": "user", "content": [
            {"type": "input_text", "text": "see"},
            {"type": "input_image", "image_url": "data:image/png;base64," + b64(png())}]}])
    assert e.value.param == "input[0].content[1]" and e.value.code == "unsupported_image_input"
    assert script.requests == []
    r = c.responses.create(model="blind-model", input="text is fine")
    assert r.status == "completed"


def test_guard_refuses_private_image_urls(guarded_server: ServerProcess, script, host: MediaHost,
                                          hits: list[str]) -> None:
    c = _client(guarded_server)
    with pytest.raises(openai.BadRequestError) as e:
        c.responses.create(model="m", input=[{"role": "user", "content": [
            {"type": "input_image", "image_url": host.url("/cat.png")}]}])
    assert e.value.param == "input[0].content[0].image_url" and e.value.code == "url_not_allowed"
    assert hits == [] and script.requests == []


@pytest.mark.parametrize("address", ["64:ff9b::7f00:2", "2002:7f00:2::1", "::127.0.0.2", "::ffff:0:127.0.0.2",
                                     "::ffff:127.0.0.2"])
def test_guard_refuses_ipv6_forms_of_private_addresses(client: OpenAI, script, address: str) -> None:
    """NAT64, 6to4, IPv4-compatible, -translated and -mapped forms of a loopback address."""
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="m", input=[{"role": "user", "content": [
            {"type": "input_file", "file_url": f"http://[{address}]:8080/secret.txt"}]}])
    assert e.value.param == "input[0].content[0].file_url" and e.value.code == "url_not_allowed"
    assert script.requests == []


@pytest.mark.parametrize("part", ["file_url", "image_url"])
def test_redirects_to_private_addresses_are_refused(allowlist_server: ServerProcess, script, host: MediaHost,
                                                    hits: list[str], private_host: PrivateHost,
                                                    part: str) -> None:
    """A URL the guard allows answering `302 Location: http://<private IP>/...`: every hop is checked, so
    the private body never reaches the engine (and so the caller)."""
    c = _client(allowlist_server)
    private_host.hits.clear()
    target = private_host.url + ("/cat.png" if part == "image_url" else "/secret.txt")
    content = ({"type": "input_file", "file_url": host.redirect(target)} if part == "file_url" else
               {"type": "input_image", "image_url": host.redirect(target)})
    with pytest.raises(openai.BadRequestError) as e:
        c.responses.create(model="m", input=[{"role": "user", "content": [content]}])
    assert e.value.param == f"input[0].content[0].{part}" and e.value.code == "url_not_allowed"
    assert "redirects to '127.0.0.2'" in e.value.message
    assert hits == ["/redirect"] and private_host.hits == [] and script.requests == []


def test_redirects_within_what_the_guard_allows_are_followed(allowlist_server: ServerProcess, script,
                                                             host: MediaHost, hits: list[str]) -> None:
    c = _client(allowlist_server)
    c.responses.create(model="m", input=[{"role": "user", "content": [
        {"type": "input_file", "file_url": host.redirect(host.url("/doc.pdf"))},
        {"type": "input_image", "image_url": host.redirect(host.redirect(host.url("/cat.png")))}]}])
    parts = user_parts(script.requests[-1])
    assert PDF_LINES[1] in parts[0]["text"]
    assert parts[1]["image_url"]["url"] == "data:image/png;base64," + b64(host.image)
    assert hits == ["/redirect", "/doc.pdf", "/redirect", "/redirect", "/cat.png"]
    script.requests.clear()
    with pytest.raises(openai.BadRequestError) as e:  # more than 5 redirects
        url = host.url("/cat.png")
        for _ in range(6):
            url = host.redirect(url)
        c.responses.create(model="m", input=[{"role": "user", "content": [{"type": "input_image", "image_url": url}]}])
    assert e.value.code == "failed_to_download_image" and "more than 5 redirects" in e.value.message


# ---- replicas on PostgreSQL share files ---------------------------------------------------------

@pytest.fixture(scope="module")
def replicas(engine: ScriptedEngine,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    import pg

    url = pg.create_database("responsa_files")
    tmp = tmp_path_factory.mktemp("files-replicas")
    servers = [ServerProcess(tmp / name, "--database-url", url, "--upstream-base-url", engine.base_url,
                             "--api-key", KEY_A, "--database-pool-size", "2") for name in ("a", "b")]
    try:
        for s in servers:
            s.start()
        yield servers
    finally:
        for s in servers:
            s.stop()
        pg.drop_database(url)


@pytest.mark.postgres
def test_replicas_share_files(replicas: list[ServerProcess], script) -> None:
    a, b = (_client(s) for s in replicas)
    image, document = png(), pdf(PDF_LINES)
    f = a.files.create(file=("cat.png", image, "image/png"), purpose="vision")
    d = a.files.create(file=("report.pdf", document, "application/pdf"), purpose="user_data")
    assert b.files.retrieve(f.id).model_dump() == f.model_dump()
    assert b.files.content(d.id).content == document
    assert {f.id, d.id} <= {x.id for x in b.files.list()}
    r = b.responses.create(model="m", input=[{"role": "user", "content": [
        {"type": "input_image", "file_id": f.id}, {"type": "input_file", "file_id": d.id}]}])
    check_response(r)
    assert user_parts(script.requests[-1]) == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(image)}},
        {"type": "text", "text": 'Contents of the file "report.pdf":\n\n' + "\n".join(PDF_LINES)}]
    assert a.files.delete(f.id).deleted
    with pytest.raises(openai.NotFoundError):
        b.files.content(f.id)
    check_response(a.responses.retrieve(r.id))
