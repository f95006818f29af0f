"""summary, keygen, sign, static-delta: publishing a repository over HTTP.

docs/http-layout.md describes what a web server then serves.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sapwood import (
    KeyPair,
    SapwoodError,
    TaskProgress,
    generate_delta,
    generate_keypair,
    list_deltas,
    read_keys_file,
    read_summary,
    rev_parse,
    sign_commit,
    summary_signers,
    update_summary,
    write_keys_file,
)
from sapwood.cli.context import open_repo
from sapwood.cli.output import emit_json, format_time, quote_path
from sapwood.cli.progress import Progress, size_text


def register(commands: Any) -> None:
    summary = commands.add_parser(
        "summary", help="show the summary (refs and deltas a server offers); -u regenerates it"
    )
    summary.add_argument("-u", "--update", action="store_true", help="regenerate it")
    summary.add_argument(
        "--keys-file",
        action="append",
        default=[],
        metavar="FILE",
        help="with -u: sign it with the secret keys of FILE (summary.sig)",
    )
    summary.add_argument("--json", action="store_true")
    summary.set_defaults(func=cmd_summary)

    keygen = commands.add_parser(
        "keygen", help="make an ed25519 key pair: the secret key to a file, the public on stdout"
    )
    keygen.add_argument(
        "--keys-file",
        metavar="FILE",
        help="new file for the secret key (0600); without it both keys are printed",
    )
    keygen.set_defaults(func=cmd_keygen)

    sign = commands.add_parser("sign", help="add detached ed25519 signatures to a commit")
    sign.add_argument("--keys-file", required=True, metavar="FILE", help="secret keys, base64")
    sign.add_argument("rev")
    sign.set_defaults(func=cmd_sign)

    delta = commands.add_parser("static-delta", help="generate and list static deltas")
    actions = delta.add_subparsers(dest="action", metavar="ACTION", parser_class=type(delta))
    actions.required = True
    generate = actions.add_parser("generate", help="write the delta FROM -> TO (or all of TO)")
    generate.add_argument("--from", dest="from_rev", metavar="REV", help="default: from nothing")
    generate.add_argument("--to", dest="to_rev", metavar="REV", required=True)
    generate.set_defaults(func=cmd_delta_generate)
    listing = actions.add_parser("list", help="the deltas of this repository")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_delta_list)


class NoSummaryError(SapwoodError):
    """The repository has no summary file yet."""


def _keys(paths: list[str]) -> list[KeyPair]:
    return [pair for path in paths for pair in read_keys_file(path)]


def cmd_summary(args: argparse.Namespace) -> int:
    if args.keys_file and not args.update:
        raise NoSummaryError("summary: --keys-file signs a summary being made: add -u")
    keys = _keys(args.keys_file)  # a bad keys file is refused before anything is written
    with open_repo(args) as repo:
        summary = update_summary(repo, keys) if args.update else read_summary(repo.path)
        signers = summary_signers(repo.path)  # valid signatures of this summary only
    if summary is None:
        raise NoSummaryError(f"{repo.path}: has no summary yet; make it with summary -u")
    if args.update and not args.json:
        return 0
    if args.json:
        emit_json(
            {
                "refs": {
                    name: {"commit": cid.hex(), "timestamp": ts}
                    for name, (cid, ts) in sorted(summary.refs.items())
                },
                "deltas": [
                    {"from": f.hex() if f else None, "to": t.hex(), "superblock": d.hex()}
                    for (f, t), d in summary.deltas.items()
                ],
                "signed": bool(signers),
                "signed_by": list(signers or ()),
            }
        )
        return 0
    for name, (commit_id, timestamp) in sorted(summary.refs.items()):
        print(f"{quote_path(name)} {commit_id.hex()} {format_time(timestamp)}")
    for from_id, to_id in summary.deltas:
        print(f"delta {from_id.hex() if from_id else 'empty'} -> {to_id.hex()}")
    if signers is None:
        print("unsigned")
    elif not signers:
        print("summary.sig does not match the summary (no valid signature)")
    for key in signers or ():
        print(f"signed by {key}")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    pair = generate_keypair()
    if args.keys_file is None:
        print(f"public: {pair.public_text}")
        print(f"secret: {pair.secret_text}")
        return 0
    write_keys_file(args.keys_file, pair)
    print(pair.public_text)
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    keys = _keys([args.keys_file])
    with open_repo(args) as repo:
        commit_id = rev_parse(repo, args.rev)
        for key in keys:
            sign_commit(repo, commit_id, key)
    sys.stdout.flush()
    return 0


def cmd_delta_generate(args: argparse.Namespace) -> int:
    with open_repo(args) as repo, Progress("static-delta") as progress:
        to_id = rev_parse(repo, args.to_rev)
        from_id = rev_parse(repo, args.from_rev) if args.from_rev is not None else None
        # generate_delta reports nothing: a timer shows it runs, then the time it took
        progress.task(TaskProgress("generating", 0))
        path = generate_delta(repo, from_id, to_id)
        progress.finish(f"generated {_parts(path)}, {_delta_size(path)}")
    print(path.name)
    return 0


def _delta_size(path: Path) -> str:
    total = sum(entry.stat().st_size for entry in path.iterdir() if entry.is_file())
    return size_text(total)


def _parts(path: Path) -> str:
    parts = sum(1 for entry in path.iterdir() if entry.name.isdigit())
    return f"{parts} part{'' if parts == 1 else 's'}"


def cmd_delta_list(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        deltas = list_deltas(repo.path)
    if args.json:
        emit_json(
            [
                {"from": f.hex() if f else None, "to": t.hex(), "superblock": d.hex()}
                for (f, t), d in deltas.items()
            ]
        )
        return 0
    for from_id, to_id in deltas:
        print(to_id.hex() if from_id is None else f"{from_id.hex()}-{to_id.hex()}")
    return 0
