"""config get|set|unset|list: the repository's settings (REPO/config) by key.

As git config: ``get`` of a key that is not set prints nothing and exits 1; ``unset``
of a key that is not set changes nothing and exits 0. Values are checked as the
repository checks them when it opens, before anything is written.
"""

from __future__ import annotations

import argparse
from typing import Any

from sapwood import get_config, list_config, set_config, unset_config
from sapwood.cli.context import repo_path
from sapwood.cli.output import emit_json, printable

EXIT_NOT_SET = 1


def register(commands: Any) -> None:
    config = commands.add_parser(
        "config",
        help="read or change the repository's settings",
        description="Keys: core.fsync, core.min-free-space-percent, core.min-free-space-size "
        "(settable); core.mode, core.repo_version and remote.NAME.url|sign-verify|"
        "trusted-keys (read only).",
    )
    actions = config.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    get = actions.add_parser("get", help="print a key's value (exit 1 if it is not set)")
    get.add_argument("key", metavar="KEY")
    get.set_defaults(func=cmd_get)
    set_ = actions.add_parser("set", help="set a key, if the repository accepts the value")
    set_.add_argument("key", metavar="KEY")
    set_.add_argument("value", metavar="VALUE")
    set_.set_defaults(func=cmd_set)
    unset = actions.add_parser("unset", help="remove a key (its default applies)")
    unset.add_argument("key", metavar="KEY")
    unset.set_defaults(func=cmd_unset)
    listing = actions.add_parser("list", help="every key the config sets, as KEY=VALUE")
    listing.add_argument("--json", action="store_true", help="as a JSON object")
    listing.set_defaults(func=cmd_list)


def cmd_get(args: argparse.Namespace) -> int:
    value = get_config(repo_path(args), args.key)
    if value is None:
        return EXIT_NOT_SET
    print(printable(value))
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    set_config(repo_path(args), args.key, args.value)
    return 0


def cmd_unset(args: argparse.Namespace) -> int:
    unset_config(repo_path(args), args.key)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    items = list_config(repo_path(args))
    if args.json:
        emit_json(dict(items))
    else:
        for key, value in items:
            print(f"{printable(key)}={printable(value)}")
    return 0
