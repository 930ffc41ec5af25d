"""The image_generation tool against a live server, a scripted engine and a test Images API."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import openai
import pytest
from harness import KEY_A, ServerProcess, ThreadServer, check_events, check_response, types_of, wire
from images_server import ImagesState, images_app, png
from openai import AzureOpenAI, OpenAI
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from responsa.backends.scripted import Script, scripted_upstream_app

UPSTREAM_KEY = "upstream-secret"
IMAGES_KEY = "images-secret"
DEFAULT_MODEL = "test-image-default"


class Backend(ThreadServer):
    """One HTTP server: the scripted Chat Completions engine and the test Images API, both under /v1,
    and GET /redirect?to=URL answering 302 to URL."""

    def __init__(self) -> None:
        self.script = Script()
        self.images = ImagesState()
        chat = scripted_upstream_app(self.script)

        async def redirect(request: Request) -> Response:
            return Response(status_code=302, headers={"location": request.query_params["to"]})

        super().__init__(Starlette(routes=[*chat.routes, *images_app(self.images).routes,
                                           Route("/redirect", redirect)]))

    def redirect(self, target: str) -> str:
        return self.url + "/redirect?" + urlencode({"to": target})


class PrivateImages(ThreadServer):
    """An image on another loopback address (127.0.0.2): a private address the guard must not reach."""

    def __init__(self) -> None:
        self.hits: list[str] = []

        async def serve(request: Request) -> Response:
            self.hits.append(request.url.path)
            return Response(png((8, 8), (1, 2, 3)), media_type="image/png")

        super().__init__(Starlette(routes=[Route("/{name}", serve)]), host="127.0.0.2")


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    server = Backend().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("images"), "--upstream-base-url", backend.url + "/v1",
                         "--upstream-api-key", UPSTREAM_KEY, "--images-base-url", backend.url + "/v1",
                         "--images-api-key", IMAGES_KEY, "--images-model", DEFAULT_MODEL, "--api-key", KEY_A,
                         "--allow-private-network")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def script(backend: Backend) -> Iterator[Script]:
    backend.script.reset()
    backend.images.reset()
    yield backend.script
    backend.script.reset()


@pytest.fixture
def images(backend: Backend, script: Script) -> ImagesState:
    return backend.images


@pytest.fixture
def client(server: ServerProcess, script: Script) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0)


def decode(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def call(prompt: str, **extra: str) -> dict:
    return {"tool_calls": [{"name": "image_generation", "arguments": {"prompt": prompt, **extra}}]}


def test_generate_then_answer(client: OpenAI, script: Script, images: ImagesState) -> None:
    tool = {"type": "image_generation", "model": "img-model", "size": "64x48", "quality": "low",
            "output_format": "png", "background": "opaque", "moderation": "low", "partial_images": 2}
    script.add(call("a red fox in the snow"), {"content": "Here is your fox."})
    r = client.responses.create(model="chat", input="Draw a fox", tools=[tool],
                                tool_choice={"type": "image_generation"})
    check_response(r)
    assert r.status == "completed" and [o.type for o in r.output] == ["image_generation_call", "message"]
    ig = r.output[0]
    assert ig.id.startswith("ig_") and ig.status == "completed" and ig.action == "generate"
    assert ig.revised_prompt == "a red fox in the snow, revised"
    assert (ig.size, ig.quality, ig.output_format, ig.background) == ("64x48", "low", "png", "opaque")
    image = decode(ig.result)
    assert image.format == "PNG" and image.size == (64, 48)
    assert r.output_text == "Here is your fox."
    assert wire(r)["tools"] == [tool]

    [sent] = images.requests
    assert sent["path"] == "/v1/images/generations"
    assert sent["headers"]["authorization"] == f"Bearer {IMAGES_KEY}"
    assert sent["body"] == {"model": "img-model", "prompt": "a red fox in the snow", "size": "64x48",
                            "quality": "low", "output_format": "png", "background": "opaque",
                            "moderation": "low"}
    first, second = script.requests
    offered = first["tools"][0]["function"]
    assert offered["name"] == "image_generation" and offered["parameters"]["required"] == ["prompt"]
    assert first["tool_choice"] == {"type": "function", "function": {"name": "image_generation"}}
    assert second["messages"][-2]["tool_calls"][0]["function"]["name"] == "image_generation"
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": ig.id,
                                      "content": "The image was generated and shown to the user."}
    assert client.responses.retrieve(r.id).model_dump() == r.model_dump()


def test_follow_up_edit_uses_previous_image(client: OpenAI, script: Script, images: ImagesState) -> None:
    script.add(call("a blue square"), {"content": "Done."},
               call("invert the top half"), {"content": "Edited."})
    r1 = client.responses.create(model="chat", input="Draw", tools=[{"type": "image_generation",
                                                                     "size": "32x32"}])
    first = r1.output[0]
    mask = Image.new("RGBA", (32, 32), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 32, 16))  # transparent top half: the part to edit
    buf = io.BytesIO()
    mask.save(buf, "PNG")
    tool = {"type": "image_generation", "input_fidelity": "high", "input_image_mask": {"image_url": data_url(
        buf.getvalue())}}
    r2 = client.responses.create(model="chat", input="Now invert the top half", tools=[tool],
                                 previous_response_id=r1.id)
    check_response(r2)
    edit = r2.output[0]
    assert edit.status == "completed" and edit.action == "edit"
    assert edit.revised_prompt == "invert the top half"
    sent = images.requests[-1]
    assert sent["path"] == "/v1/images/edits"
    assert sent["files"]["image"] == [base64.b64decode(first.result)]
    assert sent["files"]["mask"] == [buf.getvalue()]
    assert sent["content_types"]["image"] == ["image/png"]
    assert sent["body"]["input_fidelity"] == "high" and sent["body"]["model"] == DEFAULT_MODEL
    assert "moderation" not in sent["body"]
    before, after = decode(first.result).convert("RGB"), decode(edit.result).convert("RGB")
    top, bottom = (0, 0), (0, 31)
    assert after.getpixel(top) == tuple(255 - v for v in before.getpixel(top))
    assert after.getpixel(bottom) == before.getpixel(bottom)
    # The engine saw both calls as tool calls with their results, in order.
    tool_messages = [m for m in script.requests[-1]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == [first.id, edit.id]


def test_edit_of_input_images_and_action_choice(backend: Backend, client: OpenAI, script: Script,
                                                images: ImagesState) -> None:
    red, green = png((20, 10), (200, 10, 10)), png((20, 10), (10, 200, 10))
    url = backend.url + images.serve("green.png", green)  # fetched by the server (private network allowed)
    content = [{"type": "input_text", "text": "Combine these"},
               {"type": "input_image", "image_url": data_url(red)}, {"type": "input_image", "image_url": url}]
    script.add(call("combine them"), {"content": "ok"})
    r = client.responses.create(model="chat", input=[{"role": "user", "content": content}],
                                tools=[{"type": "image_generation"}])
    assert r.output[0].status == "completed" and r.output[0].action == "edit"
    sent = images.requests[-1]
    assert sent["path"] == "/v1/images/edits" and sent["files"]["image[]"] == [red, green]
    assert decode(r.output[0].result).convert("RGB").getpixel((0, 0)) == (55, 245, 245)

    # The model may ask for a new image although there is one to edit ...
    script.add(call("something new", action="generate"), {"content": "ok"})
    client.responses.create(model="chat", input="new one", tools=[{"type": "image_generation"}],
                            previous_response_id=r.id)
    assert images.requests[-1]["path"] == "/v1/images/generations"
    # ... unless the tool only allows edits; and an edit with nothing to edit fails the call.
    script.add(call("edit nothing"), {"content": "nothing to edit"})
    r3 = client.responses.create(model="chat", input="edit",
                                 tools=[{"type": "image_generation", "action": "edit"}])
    check_response(r3)
    assert r3.output[0].status == "failed" and "no image" in r3.output[0].error.message
    assert len(images.requests) == 2
    assert "action" not in script.requests[-2]["tools"][0]["function"]["parameters"]["properties"]


def test_partial_images_stream(client: OpenAI, script: Script, images: ImagesState) -> None:
    script.add(call("a lighthouse"), {"content": "A lighthouse for you."})
    gate = images.hold()
    tool = {"type": "image_generation", "partial_images": 2, "size": "40x40"}
    events = []
    for event in client.responses.create(model="chat", input="draw", tools=[tool], stream=True):
        events.append(wire(event))
        if event.type == "response.image_generation_call.partial_image" and event.partial_image_index == 1:
            # Both partial images reached the client while the Images API still works on the final one.
            gate.set()
    check_events(events)
    assert not images.gate_timed_out
    ig_events = [e for e in events if e.get("output_index") == 0]
    assert types_of(ig_events) == [
        "response.output_item.added", "response.image_generation_call.in_progress",
        "response.image_generation_call.generating", "response.image_generation_call.partial_image",
        "response.image_generation_call.partial_image", "response.image_generation_call.completed",
        "response.output_item.done"]
    added, done = ig_events[0]["item"], ig_events[-1]["item"]
    assert added["type"] == "image_generation_call" and added["status"] == "in_progress"
    assert added["result"] is None
    partials = ig_events[3:5]
    assert [p["partial_image_index"] for p in partials] == [0, 1]
    assert all(p["item_id"] == added["id"] for p in partials)
    assert all(decode(p["partial_image_b64"]).size == (40, 40) for p in partials)
    assert len({p["partial_image_b64"] for p in partials} | {done["result"]}) == 3
    assert done["status"] == "completed" and decode(done["result"]).size == (40, 40)
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][1]["content"][0]["text"] == "A lighthouse for you."
    sent = images.requests[0]["body"]
    assert sent["stream"] is True and sent["partial_images"] == 2
    stored = client.responses.retrieve(events[-1]["response"]["id"])
    assert wire(stored)["output"] == events[-1]["response"]["output"]


def test_background_stream_and_replay(client: OpenAI, script: Script, images: ImagesState) -> None:
    script.add(call("a boat"), {"content": "A boat."})
    tool = {"type": "image_generation", "partial_images": 1, "size": "24x24"}
    events = [wire(e) for e in client.responses.create(
        model="chat", input="draw", tools=[tool], stream=True, background=True,
        extra_headers={"x-ms-oai-image-generation-deployment": "bg-deployment"})]
    check_events(events)
    assert "response.image_generation_call.partial_image" in types_of(events)
    assert images.requests[-1]["body"]["model"] == "bg-deployment"
    rid = events[0]["response"]["id"]
    replay = [wire(e) for e in client.responses.retrieve(rid, stream=True)]
    assert replay == events
    assert client.responses.retrieve(rid).output[0].status == "completed"


def test_deployment_header(server: ServerProcess, script: Script, images: ImagesState) -> None:
    azure = AzureOpenAI(base_url=server.url + "/openai/v1/", api_version="preview", api_key=KEY_A,
                        max_retries=0,
                        default_headers={"x-ms-oai-image-generation-deployment": "my-image-deployment"})
    for prompt in ("one", "two", "three"):
        script.add(call(prompt), {"content": "ok"})
    r = azure.responses.create(model="gpt-4.1", input="draw", tools=[{"type": "image_generation"}])
    assert r.output[0].status == "completed"
    assert images.requests[-1]["body"]["model"] == "my-image-deployment"
    # The tool's own model wins over the header; without either, the configured default is used.
    azure.responses.create(model="gpt-4.1", input="draw",
                           tools=[{"type": "image_generation", "model": "tool-model"}])
    assert images.requests[-1]["body"]["model"] == "tool-model"
    plain = OpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0)
    plain.responses.create(model="gpt-4.1", input="draw", tools=[{"type": "image_generation"}],
                           extra_headers={"X-Ms-Oai-Image-Generation-Deployment": "per-request"})
    assert images.requests[-1]["body"]["model"] == "per-request"


def test_backend_failure_is_told_to_the_model(client: OpenAI, script: Script, images: ImagesState) -> None:
    images.fail(500, "The image engine is on fire.", code="engine_down")
    script.add(call("a cat"), {"content": "Sorry, the image could not be made."})
    r = client.responses.create(model="chat", input="draw a cat", tools=[{"type": "image_generation"}])
    check_response(r)
    assert r.status == "completed" and r.output_text == "Sorry, the image could not be made."
    ig = r.output[0]
    assert ig.status == "failed" and ig.result is None
    assert ig.error.code == "engine_down" and "on fire" in ig.error.message and "500" in ig.error.message
    told = script.requests[-1]["messages"][-1]
    assert told["role"] == "tool" and told["content"].startswith("Image generation failed: ")
    assert "on fire" in told["content"]


def test_backend_failure_mid_stream(client: OpenAI, script: Script, images: ImagesState) -> None:
    images.fail(message="Lost the GPU.", code="gpu_lost", mid_stream=True)
    script.add(call("a dog"), {"content": "It failed."})
    events = [wire(e) for e in client.responses.create(
        model="chat", input="draw", tools=[{"type": "image_generation", "partial_images": 1}], stream=True)]
    check_events(events)
    assert types_of([e for e in events if e.get("output_index") == 0]) == [
        "response.output_item.added", "response.image_generation_call.in_progress",
        "response.image_generation_call.generating", "response.image_generation_call.partial_image",
        "response.output_item.done"]
    done = next(e for e in events if e["type"] == "response.output_item.done")["item"]
    assert done["status"] == "failed" and done["error"]["code"] == "gpu_lost" and done["result"] is None
    assert events[-1]["type"] == "response.completed"


def test_input_image_by_file_id(client: OpenAI, script: Script, images: ImagesState) -> None:
    blue = png((16, 16), (0, 0, 250))
    try:
        uploaded = client.files.create(file=("blue.png", blue, "image/png"), purpose="vision")
    except openai.NotFoundError:
        pytest.skip("optional: this build has no Files API yet")
    script.add(call("make it yellow"), {"content": "ok"})
    r = client.responses.create(model="chat", tools=[{"type": "image_generation"}], input=[
        {"role": "user", "content": [{"type": "input_text", "text": "edit"},
                                     {"type": "input_image", "file_id": uploaded.id}]}])
    assert r.output[0].status == "completed"
    assert images.requests[-1]["files"]["image"] == [blue]


def test_tool_entry_checks(client: OpenAI) -> None:
    bad = [({"partial_images": 4}, "tools[0].partial_images"), ({"size": "big"}, "tools[0].size"),
           ({"quality": "ultra"}, "tools[0].quality"),
           ({"output_compression": 101}, "tools[0].output_compression"),
           ({"input_image_mask": {"image_url": "data:x", "file_id": "file-1"}}, "tools[0].input_image_mask"),
           ({"input_image_mask": {"image_url": "ftp://x"}}, "tools[0].input_image_mask.image_url"),
           ({"colour": "red"}, "tools[0].colour"), ({"background": "green"}, "tools[0].background")]
    for fields, param in bad:
        with pytest.raises(openai.BadRequestError) as e:
            client.responses.create(model="chat", input="x", tools=[{"type": "image_generation", **fields}])
        assert e.value.body["param"] == param, fields


@pytest.fixture(scope="module")
def private_images() -> Iterator[PrivateImages]:
    server = PrivateImages().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def guarded_server(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """May fetch input images from 127.0.0.1 (the backend) and from no other private address."""
    proc = ServerProcess(tmp_path_factory.mktemp("images-guarded"), "--upstream-base-url", backend.url + "/v1",
                         "--images-base-url", backend.url + "/v1", "--api-key", KEY_A,
                         "--allow-private-address", "127.0.0.1")
    proc.start()
    yield proc
    proc.stop()


@pytest.mark.parametrize("where", ["input_image", "input_image_mask"])
def test_input_images_redirected_to_private_addresses_are_refused(
        guarded_server: ServerProcess, backend: Backend, private_images: PrivateImages, script: Script,
        images: ImagesState, where: str) -> None:
    private_images.hits.clear()
    url = backend.redirect(private_images.url + "/metadata.png")
    image = url if where == "input_image" else data_url(png((8, 8), (200, 10, 10)))
    tool: dict = {"type": "image_generation"}
    if where == "input_image_mask":
        tool["input_image_mask"] = {"image_url": url}
    script.add(call("edit it"), {"content": "could not"})
    c = OpenAI(base_url=guarded_server.base_url, api_key=KEY_A, max_retries=0)
    r = c.responses.create(model="chat", tools=[tool], input=[{"role": "user", "content": [
        {"type": "input_text", "text": "edit"}, {"type": "input_image", "image_url": image}]}])
    check_response(r)
    ig = r.output[0]
    assert ig.status == "failed" and ig.error.code == "invalid_image_url"
    assert "redirects to '127.0.0.2'" in ig.error.message
    assert private_images.hits == [] and images.requests == []


def test_images_api_defaults_to_upstream(backend: Backend, script: Script, images: ImagesState,
                                          tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path, "--upstream-base-url", backend.url + "/v1",
                         "--upstream-api-key", UPSTREAM_KEY)
    proc.start()
    try:
        script.add(call("a tree"), {"content": "ok"})
        r = OpenAI(base_url=proc.base_url, api_key="unused", max_retries=0).responses.create(
            model="chat", input="draw", tools=[{"type": "image_generation"}])
        assert r.output[0].status == "completed"
        [sent] = images.requests
        assert sent["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
        assert sent["body"]["model"] == "gpt-image-1.5"
    finally:
        proc.stop()


def test_no_images_backend_is_a_400(tmp_path: Path) -> None:
    config = tmp_path / "responsa.toml"
    config.write_text('[backends.s]\nkind = "scripted"\n\n[models]\n"*" = "s"\n')
    proc = ServerProcess(tmp_path / "data", "--config", str(config))
    proc.start()
    try:
        c = OpenAI(base_url=proc.base_url, api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError) as e:
            c.responses.create(model="m", input="draw", tools=[{"type": "image_generation"}])
        assert e.value.body["param"] == "tools" and "--images-base-url" in e.value.body["message"]
        with pytest.raises(openai.BadRequestError):
            c.responses.create(model="m", input="draw", tools=[{"type": "image_generation"}], stream=True)
        assert c.responses.create(model="m", input="hi").status == "completed"
    finally:
        proc.stop()
