"""Records on store/record.py's bases behave as the dataclasses they replaced:
compared and hashed by their fields, frozen, and copied and pickled whole."""

from __future__ import annotations

import copy
import pickle

import pytest

from store.ids import ObjectId, digest
from store.objects import Commit, DirMeta, FileHeader
from store.pull.settings import FetchSettings


def _records() -> list[object]:
    tree = ObjectId(digest(b"t"))
    return [
        DirMeta(0, 0, 0o40755, xattrs=((b"user.a", b"1"),)),
        FileHeader(1000, 1000, 0o100644),
        Commit(tree=tree, meta=ObjectId(digest(b"m")), parent=None, timestamp=5, subject="s"),
        FetchSettings(retries=2),
    ]


@pytest.mark.parametrize("record", _records(), ids=lambda r: type(r).__name__)
def test_a_record_copies_and_pickles_to_an_equal_one(record: object) -> None:
    for again in (
        copy.copy(record),
        copy.deepcopy(record),
        pickle.loads(pickle.dumps(record)),
    ):
        assert again == record and again is not record
        assert repr(again) == repr(record)


def test_frozen_records_refuse_changes_and_hash_by_their_fields() -> None:
    meta = DirMeta(0, 0, 0o40755)
    with pytest.raises(AttributeError):
        meta.mode = 0o40700
    assert hash(meta) == hash(DirMeta(0, 0, 0o40755))
    assert meta != DirMeta(0, 0, 0o40700)
    assert {meta, DirMeta(0, 0, 0o40755)} == {meta}
