"""Files and media: upload / download throughput, file_id inlining and PDF extraction cost, server memory.

Runs a live server (SQLite in a temp dir) against the scripted engine and prints numbers:
    python benchmarks/files.py [--sizes 1,16,60]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness import KEY_A, ScriptedEngine, ServerProcess  # noqa: E402
from openai import OpenAI  # noqa: E402
from test_files import pdf, png  # noqa: E402

from responsa.media import Blob, extract_text  # noqa: E402


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(fn, repeat: int = 5) -> float:
    """Median seconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1,16,60", help="upload sizes in MiB")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    engine = ScriptedEngine().start()
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(tmp, "--upstream-base-url", engine.base_url, "--api-key", KEY_A,
                               "--access-log", "false").start()
        try:
            client = OpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0)
            assert server.proc is not None
            print(f"server peak RSS at start: {peak_rss_mb(server.proc.pid):.0f} MiB")
            for mib in sizes:
                data = b"\x00" * (mib * 1024 * 1024)
                start = time.perf_counter()
                f = client.files.create(file=("blob.bin", data, "application/octet-stream"),
                                        purpose="user_data")
                up = time.perf_counter() - start
                start = time.perf_counter()
                got = client.files.content(f.id).content
                down = time.perf_counter() - start
                assert len(got) == len(data)
                print(f"{mib:>4} MiB: upload {up:.3f} s ({mib / up:.0f} MiB/s), download {down:.3f} s "
                      f"({mib / down:.0f} MiB/s), server peak RSS {peak_rss_mb(server.proc.pid):.0f} MiB")
            baseline = timed(lambda: client.responses.create(model="m", input="hi"))
            print(f"text-only response: {baseline * 1000:.1f} ms (median of 5)")
            for pad_kib in (100, 1024, 8192):
                image = client.files.create(file=("i.png", png(pad=pad_kib * 1024), "image/png"),
                                            purpose="vision")
                part = {"type": "input_image", "file_id": image.id}
                t = timed(lambda part=part: client.responses.create(
                    model="m", input=[{"role": "user", "content": [part]}]))
                print(f"response with a {pad_kib} KiB image by file_id: {t * 1000:.1f} ms "
                      f"(+{(t - baseline) * 1000:.1f} ms over text only)")
            document = pdf([f"Line {n} of a long report with some words in it" for n in range(40)])
            pages = _multi_page(document, 100)
            start = time.perf_counter()
            text = extract_text(Blob(pages, "application/pdf", "r.pdf"), "input")
            print(f"pypdf: 100-page PDF ({len(pages) // 1024} KiB) -> {len(text)} chars in "
                  f"{time.perf_counter() - start:.3f} s")
            d = client.files.create(file=("r.pdf", pages, "application/pdf"), purpose="user_data")
            part = {"type": "input_file", "file_id": d.id}
            start = time.perf_counter()
            r = client.responses.create(model="m", input=[{"role": "user", "content": [part]}])
            print(f"response with that PDF by file_id (text-only engine), first: "
                  f"{(time.perf_counter() - start) * 1000:.1f} ms")
            t = timed(lambda: client.responses.create(model="m", input="more?", previous_response_id=r.id))
            print(f"a follow-up turn in that conversation (text cached): {t * 1000:.1f} ms")
            print(f"server peak RSS at end: {peak_rss_mb(server.proc.pid):.0f} MiB")
        finally:
            server.stop()
            engine.stop()


def _multi_page(single: bytes, pages: int) -> bytes:
    """A PDF of `pages` copies of a one-page PDF (pypdf's writer)."""
    import io

    from pypdf import PdfReader, PdfWriter

    page = PdfReader(io.BytesIO(single)).pages[0]
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_page(page)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


if __name__ == "__main__":
    main()
