"""What every subcommand of framepack_cli.py shares: the parser class, the help layout and the
`--out` rule.

- `CliParser`: a bad value is one line (`prog: error: argument --fps: ...`), not the whole usage;
  a misspelt flag prints the subcommand's usage and the closest real flag ("did you mean
  --duration?"); a misspelt choice names the closest choice. Subparsers made from a `CliParser`
  are `CliParser`s too, so a new subcommand gets this by registering itself.
- `DefaultsFormatter`: `--help` shows every option's default.
- `output_target`: `--out` names a file (`clip.mp4`: exactly that file) or a folder (an existing
  folder, a name ending in `/`, or a name without an extension: a fresh name inside it). Missing
  folders are created; an existing file is refused unless `--overwrite`. Every writer publishes
  atomically (framepack.io.paths), so nothing half-written ever has the final name.

Only argparse and pathlib at import time: `--help` stays instant.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

LONG_DEFAULT = 40
"""Defaults longer than this (the system prompt) are cut short in --help."""


def closest(word: str, candidates) -> str | None:
    """The candidate `word` most likely misspells, or None."""
    found = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that ends every option's text with its default (an on/off flag: off; a --no-X flag says what it turns off)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if isinstance(action, argparse._StoreTrueAction) and "default" not in text.lower():
            return f"{text} (default: off)"
        if (not action.option_strings or action.nargs == 0 or "default" in text.lower()
                or default in (None, "", [], argparse.SUPPRESS)):
            return text
        shown = str(default)
        if len(shown) > LONG_DEFAULT:
            shown = shown[:LONG_DEFAULT].rstrip() + "..."
        return f"{text} (default: {shown.replace('%', '%%')})"


class CliParser(argparse.ArgumentParser):
    """argparse with one-line value errors and suggestions for misspelt flags and choices."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):
        """Parse; `namespace.given` is the set of destinations the command line set explicitly
        (so settings read from elsewhere, such as `generate --from`, yield only to real flags)."""
        tokens = list(sys.argv[1:] if args is None else args)
        namespace, extras = self.parse_known_args(tokens, namespace)
        chosen = self._chosen_subparser(namespace)
        if extras:
            (chosen or self).unrecognized(extras)
        command = getattr(namespace, "command", None)
        if chosen is not None and command in tokens:
            namespace.given = chosen.given_dests(tokens[tokens.index(command) + 1:])
        else:
            namespace.given = self.given_dests(tokens)
        return namespace

    def given_dests(self, tokens: list[str]) -> set[str]:
        """The destinations `tokens` set (parsed again with every default suppressed)."""
        saved = [(action, action.default) for action in self._actions]
        defaults = self._defaults
        try:
            for action, _ in saved:
                action.default = argparse.SUPPRESS
            self._defaults = {}
            namespace, _ = argparse.ArgumentParser.parse_known_args(self, tokens)
        except SystemExit:  # cannot happen after a successful parse; never fatal here
            return set()
        finally:
            for action, default in saved:
                action.default = default
            self._defaults = defaults
        return set(vars(namespace))

    def _chosen_subparser(self, namespace) -> "CliParser | None":
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                chosen = action.choices.get(getattr(namespace, action.dest, None) or "")
                if isinstance(chosen, CliParser):
                    return chosen._chosen_subparser(namespace) or chosen
        return None

    def unrecognized(self, extras: list[str]) -> None:
        """Usage, then each unknown flag with the closest real one; exits 2."""
        flags = [flag for action in self._actions for flag in action.option_strings]
        problems, after_unknown = [], False
        for token in extras:
            name = token.split("=", 1)[0]
            if not name.startswith("-") or name == "-":
                if not after_unknown:  # else it is most likely the unknown flag's value
                    problems.append(f"unexpected value {token!r}")
                after_unknown = False
                continue
            guess = closest(name, flags)
            problems.append(f"unknown option {name}" + (f" (did you mean {guess}?)" if guess else ""))
            after_unknown = "=" not in token
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {'; '.join(problems)}\n")

    def error(self, message: str):
        """A bad or missing value: one line, with where to look."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _check_value(self, action, value):
        if action.choices is not None and value not in action.choices:
            guess = closest(str(value), [str(choice) for choice in action.choices])
            hint = f"; did you mean {guess!r}?" if guess else ""
            choices = ", ".join(map(str, action.choices))
            raise argparse.ArgumentError(action, f"invalid choice {value!r}{hint} (choose from {choices})")


# ------------------------------------------------------------------------------ --out

@dataclass(frozen=True)
class OutputTarget:
    """Where a command writes: `folder`, and `name` (the exact file name) or None (a fresh name)."""

    folder: Path
    name: str | None = None
    overwrite: bool = False

    @property
    def stem(self) -> str | None:
        return None if self.name is None else Path(self.name).stem

    @property
    def suffix(self) -> str | None:
        return None if self.name is None else Path(self.name).suffix.lower()

    def prepare(self, flag: str = "--out") -> Path:
        """Create the folder (and its parents) when missing; returns it."""
        from framepack.errors import InputError

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(f"{flag}: cannot create folder {str(self.folder)!r}: "
                             f"{error.strerror or error}") from None
        return self.folder

    def path(self, stem: str, suffix: str, flag: str = "--out") -> Path:
        """The file to write: the exact name, or `folder/<stem>[-N]<suffix>` that does not exist yet."""
        from framepack.io.paths import unique_output_path

        self.prepare(flag)
        if self.name is not None:
            return self.folder / self.name
        return unique_output_path(self.folder, stem, suffix)


def names_a_folder(out: str | os.PathLike) -> bool:
    """An existing folder, a name ending in a separator, or a name without an extension."""
    text = os.fspath(out)
    path = Path(text)
    return path.is_dir() or text.endswith(("/", os.sep)) or not path.suffix


def output_target(out: str | os.PathLike, suffixes, overwrite: bool = False, flag: str = "--out") -> OutputTarget:
    """Resolve `--out` by the one rule every command follows (see the module docstring).

    `suffixes`: the file types this command writes (".mp4", ...). A file name with another
    extension is refused (a typo would otherwise make a folder named `clip.mp5`); an existing
    file is refused unless `overwrite`.
    """
    from framepack.errors import InputError

    path = Path(out).expanduser()
    if names_a_folder(out):
        if path.exists() and not path.is_dir():
            raise InputError(f"{flag}: {os.fspath(out)!r} is a file, not a folder")
        return OutputTarget(path, None, overwrite)
    if path.suffix.lower() not in suffixes:
        raise InputError(f"{flag}: {os.fspath(out)!r} is not a {' / '.join(suffixes)} file; "
                         f"give one of those, or a folder (end it with '/')")
    if path.exists() and not overwrite:
        raise InputError(f"{flag}: {os.fspath(out)!r} already exists; pass --overwrite to replace it, "
                         f"or give a folder to get a fresh numbered name in it")
    if path.parent.exists() and not path.parent.is_dir():
        raise InputError(f"{flag}: {str(path.parent)!r} is a file, not a folder")
    return OutputTarget(path.parent, path.name, overwrite)
