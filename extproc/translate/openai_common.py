"""OpenAI Chat Completions request facts shared by every translator that reads an OpenAI client's request.

Kept apart from any one backend so the Anthropic, Bedrock and Gemini translators read images and files the
same way.
"""

from __future__ import annotations


def data_uri(url: str) -> tuple[str, str] | None:
    """``(media type, base64 data)`` of a ``data:…;base64,…`` URI (how OpenAI clients inline images and
    files), None for any other URL."""
    if not url.startswith("data:"):
        return None
    header, comma, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if not comma or encoding.lower() != "base64" or not media_type:
        return None
    return media_type, data
