"""The ``tokenvoy`` command: one entry point, one sub-command per process the gateway runs."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from importlib import import_module

from tokenvoy import __version__

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("tokenvoy.runner.run", "run Envoy + extproc + ratelimit (+ the fake provider) on this machine"),
    "validate": ("tokenvoy.config.cli", "check gateway config files and summarize what they configure"),
    "render": ("tokenvoy.render.cli", "write the Envoy bootstrap and ratelimit config for a gateway config"),
    "extproc": ("tokenvoy.extproc.server", "run the ext_proc gRPC server alone"),
    "ratelimit": ("tokenvoy.ratelimit.server", "run the rate limit (token budget) gRPC server alone"),
    "eg-extension": (
        "tokenvoy.egext.server",
        "run the Envoy Gateway extension server (tokenvoy's filters in EG's xDS)",
    ),
    "testupstream": ("tokenvoy.testupstream.server", "run the fake LLM provider (OpenAI and Anthropic wire formats)"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: tokenvoy COMMAND [--help]  (version {__version__})", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if args[0] == "--version":
        print(__version__)
        return 0
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"tokenvoy: unknown command {args[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    entry: Callable[[Sequence[str]], int] = import_module(command[0]).main
    return int(entry(args[1:]) or 0)
