"""The console's template filters: what they let through, and what they never show."""

from __future__ import annotations

from responsa.console.render import image_src, link, pretty, preview, scrub, templates, when


def test_secrets_are_never_rendered() -> None:
    tool = {"type": "mcp", "server_label": "s", "headers": {"Authorization": "Bearer sk-secret"},
            "authorization": "tok-secret", "nested": [{"api_key": "k-secret", "keep": 1}]}
    shown = pretty(tool)
    assert "secret" not in shown and '"keep": 1' in shown and '"server_label": "s"' in shown
    assert scrub(tool) == {"type": "mcp", "server_label": "s", "nested": [{"keep": 1}]}


def test_only_inline_images_load_and_only_web_links_link() -> None:
    assert image_src("data:image/png;base64,AAAA") == "data:image/png;base64,AAAA"
    for url in ("https://example.com/a.png", "javascript:alert(1)", "data:text/html,<script>", None, 3):
        assert image_src(url) is None
    assert link("https://example.com/a") == "https://example.com/a"
    assert link("javascript:alert(1)") is None and link("data:text/html,x") is None


def test_pretty_shows_json_arguments_as_json() -> None:
    assert pretty('{"city":"Paris"}') == '{\n  "city": "Paris"\n}'
    assert pretty("not json <b>") == "not json <b>"  # escaped by the template, not here


def test_templates_escape_what_they_show() -> None:
    item = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "<script>x</script>"}]}
    html = templates().get_template("items.html").module.item(item)  # type: ignore[attr-defined]
    assert "<script>x" not in str(html) and "&lt;script&gt;x&lt;/script&gt;" in str(html)


def test_preview_and_when() -> None:
    response = {"output": [{"type": "message", "content": [{"type": "output_text", "text": "a" * 500}]}]}
    assert preview(response) == "a" * 160 + "…"
    assert preview({"output": []}) == ""
    assert when(0) == "1970-01-01 00:00:00 UTC" and when(None) == ""
