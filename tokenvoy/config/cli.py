"""``tokenvoy validate``: every problem of a gateway config at once, or what it will do."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tokenvoy.config.loader import ConfigError, load_config
from tokenvoy.config.summary import summarize


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tokenvoy validate",
        description="Check gateway config files (Envoy AI Gateway YAML). Lists every error, each naming the "
        "file, the resource (kind/name) and the field; exits 1 if there is any. Otherwise prints a summary.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.files)
    except ConfigError as exc:
        count = len(exc.problems)
        print(f"{count} error{'s' if count != 1 else ''}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(summarize(config))
    return 0
