"""Prefixed random ids in the shapes the hosted API uses."""

from __future__ import annotations

import os


def new_id(prefix: str) -> str:
    """`prefix_` + 48 hex characters (192 random bits)."""
    return f"{prefix}_{os.urandom(24).hex()}"


def response_id() -> str:
    return new_id("resp")


def message_id() -> str:
    return new_id("msg")


def function_call_id() -> str:
    return new_id("fc")


def call_id() -> str:
    return new_id("call")


def reasoning_id() -> str:
    return new_id("rs")


def file_id() -> str:
    # Files use a dash, as the hosted API does (`file-...`).
    return "file-" + os.urandom(16).hex()
