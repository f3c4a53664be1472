"""Which input rows the plan must shuffle, decided from a compact key set before the run.

Dedup and the incremental anti-join need every row of a text hash in one place: the plan's
all-to-all hash shuffle, which holds the whole night in the object store before the first
prompt. Only some rows need it: those whose text occurs more than once tonight (dedup), whose
text the stored table holds (skip and reuse), and those without a text hash (blank values,
matched by doc). Every other row needs nothing from any other row, so it streams from the read
to the engine. A survey of tonight's text hashes, as 8-byte keys (the first 16 hex digits of
the SHA-256), names the keys that need the shuffle (`Survey.named`).

Two texts whose hashes share a key are both named: they take the shuffle, which compares full
hashes, so a key collision costs a shuffle, never a wrong answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from emoray.statuses import SETTLED
from emoray.tasks import TaskRequest

KEY_DIGITS = 16
"""Hex digits of the text hash in a key (64 bits)."""

ONE_WAVE = (0, 1)
"""(wave, waves) of a night that runs in one wave: every row."""


def hash_keys(sha: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(keys, valid): each text hash's first 64 bits as an int64, and which rows have a hash
    (vectorised: the digits as one fixed-width buffer, decoded by `bytes.fromhex`). A value
    that is not a hex digest (a table written by another tool) has no key: it can match no
    hash of tonight's, whose are all SHA-256 digests."""
    valid = pc.fill_null(pc.greater_equal(pc.binary_length(sha), KEY_DIGITS), False).to_numpy(
        zero_copy_only=False)
    digits = pc.utf8_slice_codeunits(sha.filter(pa.array(valid)), 0, KEY_DIGITS)
    digits = digits.combine_chunks() if isinstance(digits, pa.ChunkedArray) else digits
    digits = digits.cast(pa.binary()).cast(pa.binary(KEY_DIGITS))
    raw = np.frombuffer(digits.buffers()[1], np.uint8, len(digits) * KEY_DIGITS,
                        digits.offset * KEY_DIGITS) if len(digits) else np.zeros(0, np.uint8)
    keys = np.zeros(len(valid), np.int64)
    try:
        decoded = bytes.fromhex(raw.tobytes().decode("ascii"))
    except ValueError:  # some value is not hex: decode one by one, those without a key
        return _keys_one_by_one(sha)
    keys[valid] = np.frombuffer(decoded, ">u8").astype(np.uint64).view(np.int64)
    return keys, valid


def _keys_one_by_one(sha: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """`hash_keys` of values that are not all hex digests (the slow path)."""
    keys, valid = np.zeros(len(sha), np.int64), np.zeros(len(sha), bool)
    for i, value in enumerate(sha.to_pylist()):
        try:
            keys[i] = np.frombuffer(bytes.fromhex(value[:KEY_DIGITS]), ">u8").astype(
                np.uint64).view(np.int64)[0]
            valid[i] = len(value) >= KEY_DIGITS
        except (TypeError, ValueError, UnicodeDecodeError):
            continue
    return keys, valid


def batch_keys(batch: pa.Table) -> pa.Table:
    """A normalized input batch's text hash keys (null: no hash), for the survey."""
    keys, valid = hash_keys(batch["text_sha256"])
    return pa.table({"key": pa.array(keys, pa.int64(), mask=~valid)})


def _members(keys: np.ndarray, sorted_set: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hit, index): which `keys` are in `sorted_set`, and where."""
    index = np.searchsorted(sorted_set, keys)
    clipped = np.minimum(index, max(len(sorted_set) - 1, 0))
    hit = (index < len(sorted_set)) & (sorted_set[clipped] == keys) if len(sorted_set) else (
        np.zeros(len(keys), bool))
    return hit, clipped


@dataclass
class Survey:
    """Tonight's input as keys: the distinct keys, the ones whose rows take the shuffle
    (`named`), how many rows have no hash, and per task request which distinct keys the table
    holds a settled answer for (`held`, filled by `add_stored` from the table's key index), and
    which stored data files hold tonight's keys (`files_for`)."""

    keys: np.ndarray
    repeated: np.ndarray
    rows: int
    unhashed: int
    stored: np.ndarray = field(init=False)
    held: dict[str, np.ndarray] = field(default_factory=dict)
    files: dict[str, np.ndarray] = field(default_factory=dict)
    """Per stored data file, the indexes of tonight's keys it holds (`add_stored`)."""
    unhashed_files: set[str] = field(default_factory=set)
    """Stored data files holding rows without a text hash."""

    def __post_init__(self):
        self.stored = np.zeros(len(self.keys), bool)

    def unmatched(self) -> Survey:
        """The same keys of tonight's input, matched against no stored rows yet."""
        return Survey(keys=self.keys, repeated=self.repeated, rows=self.rows,
                      unhashed=self.unhashed)

    @classmethod
    def of(cls, batches: Iterable[pa.Table]) -> Survey:
        """From `batch_keys` batches (a pass over tonight's normalized input)."""
        parts, rows, unhashed = [], 0, 0
        for b in batches:
            rows += b.num_rows
            unhashed += b["key"].null_count
            parts.append(pc.drop_null(b["key"]).to_numpy())
        keys, counts = np.unique(np.concatenate(parts) if parts else np.zeros(0, np.int64),
                                 return_counts=True)
        return cls(keys=keys, repeated=keys[counts > 1], rows=rows, unhashed=unhashed)

    def add_stored(self, file: str, rows: pa.Table, requests: list[TaskRequest]) -> bool:
        """Mark tonight's keys that the stored rows of one data file (`file`; its key index rows:
        `key`, `task`, `target`, `status`, already this model's under tonight's prompt
        versions) hold, and per request those with a settled answer; remember which of
        tonight's keys the file holds, and whether it holds rows without a hash. True when the
        file holds anything tonight's plan must read."""
        for r in requests:
            self.held.setdefault(r.key, np.zeros(len(self.keys), bool))
        valid = pc.is_valid(rows["key"]).to_numpy(zero_copy_only=False)
        keys = pc.fill_null(rows["key"], 0).to_numpy()
        hit, index = _members(keys, self.keys)
        hit &= valid
        self.stored[index[hit]] = True
        settled = hit & pc.is_in(rows["status"], pa.array(list(SETTLED))).to_numpy(
            zero_copy_only=False)
        for r in requests:
            mine = pc.equal(rows["task"], r.task.name)
            mine = pc.and_(mine, pc.equal(rows["target"], r.target) if r.target
                           else pc.is_null(rows["target"]))
            mine = pc.fill_null(mine, False).to_numpy(zero_copy_only=False)
            self.held[r.key][index[settled & mine]] = True
        if hit.any():
            self.files[file] = np.unique(index[hit])
        if not valid.all():
            self.unhashed_files.add(file)
        return bool(hit.any()) or not valid.all()

    def files_for(self, named: np.ndarray, wave: tuple[int, int] = ONE_WAVE) -> list[str]:
        """The data files (after `add_stored`) that hold a key in `named` of `wave`, plus in the
        wave of texts without a hash (wave 0), when tonight has such rows, the files holding
        stored rows without one (they match by doc id)."""
        out = [f for f, index in self.files.items()
               if len(np.intersect1d(keys_in_wave(self.keys[index], *wave), named))]
        if wave[0] == 0 and self.unhashed:
            out += sorted(self.unhashed_files - set(out))
        return out

    @property
    def named(self) -> np.ndarray:
        """Sorted keys whose rows take the shuffle: repeated tonight or held by the table."""
        return np.union1d(self.repeated, self.keys[self.stored])

    @property
    def shuffled_rows(self) -> bool:
        """Whether some input row takes the shuffle."""
        return self.unhashed > 0 or len(self.named) > 0

    @property
    def streamed_rows(self) -> bool:
        """Whether some input row streams (its key is not named)."""
        return len(self.keys) > len(self.named)

    def prompts_wanted(self, wave: tuple[int, int] = ONE_WAVE) -> bool:
        """Whether some distinct text (of `wave`) lacks a settled stored answer for some
        request (after `add_stored`): then the engine is wanted. A key collision can only hide
        a text as held; the engine then starts on the first prompt instead of with the run."""
        mine = wave_of(self.keys, wave[1]) == wave[0]
        if not self.held:
            return bool(mine.any())
        return any(not h[mine].all() for h in self.held.values())


def take(batch: pa.Table, named: np.ndarray, shuffled: bool) -> pa.Table:
    """The rows of a normalized input batch that take the shuffle (`shuffled`: no hash, or a
    named key) or the others (they stream)."""
    keys, valid = hash_keys(batch["text_sha256"])
    hit, _ = _members(keys, named)
    goes = ~valid | hit
    return batch.filter(pa.array(goes if shuffled else ~goes))


def wave_of(keys: np.ndarray, waves: int) -> np.ndarray:
    """Each text hash key's wave of `waves`: the key (as unsigned) modulo `waves`."""
    return keys.view(np.uint64) % np.uint64(waves)


def keys_in_wave(keys: np.ndarray, wave: int, waves: int) -> np.ndarray:
    """The (sorted) `keys` whose texts are in `wave` of `waves`."""
    return keys if waves == 1 else keys[wave_of(keys, waves) == wave]


def in_wave(batch: pa.Table, wave: int, waves: int) -> pa.Table:
    """The rows of a normalized batch (or stored rows) in `wave` of `waves` (`wave_of`); rows
    without a hash (a null text) are in wave 0. Every row of a text lands in one wave, so each
    wave dedups and reuses on its own."""
    if waves == 1:
        return batch
    keys, valid = hash_keys(batch["text_sha256"])
    return batch.filter(pa.array(np.where(valid, wave_of(keys, waves), 0) == wave))
