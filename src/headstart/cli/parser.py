"""The command line's parser: no abbreviated flags, and a suggestion for a mistyped one.

argparse on Python < 3.14 accepts any unambiguous prefix of a flag (``--form`` for ``--format``)
and reports an unknown flag with the top-level usage only; here an unknown flag or command gets
the closest real one, under the usage of the command it was given to.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys


class HeadstartParser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # `--form` is not `--format`: a typo must not pass as a flag
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            parser = self._command_parser(parsed) or self
            parser.error(f"unrecognized arguments: {' '.join(extras)}" + parser._suggest(extras))
        return parsed

    def error(self, message: str):
        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            choices = re.findall(r"'([^']*)'", m.group(2))
            close = difflib.get_close_matches(m.group(1), choices, n=1, cutoff=0.5)
            if close:
                message += f"; did you mean '{close[0]}'?"
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n(see `{self.prog} --help`)\n")

    def _command_parser(self, parsed) -> argparse.ArgumentParser | None:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action.choices.get(getattr(parsed, action.dest, None) or "")
        return None

    def _suggest(self, extras: list[str]) -> str:
        flags = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
        hints = []
        for word in extras:
            if word.startswith("-"):
                close = difflib.get_close_matches(word.split("=")[0], flags, n=1, cutoff=0.6)
                if close:
                    hints.append(f"{word}: did you mean {close[0]}?")
        return ("; " + "; ".join(hints)) if hints else ""
