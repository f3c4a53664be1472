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

from collections.abc import Iterable, Iterator
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
    (vectorised: the digits as one fixed-width buffer, decoded by `bytes.fromhex`)."""
    valid = pc.is_valid(sha).to_numpy(zero_copy_only=False)
    digits = pc.utf8_slice_codeunits(pc.drop_null(sha), 0, KEY_DIGITS)
    digits = digits.combine_chunks() if isinstance(digits, pa.ChunkedArray) else digits
    digits = digits.cast(pa.binary()).cast(pa.binary(KEY_DIGITS))
    raw = np.frombuffer(digits.buffers()[1], np.uint8, len(digits) * KEY_DIGITS,
                        digits.offset * KEY_DIGITS) if len(digits) else np.zeros(0, np.uint8)
    keys = np.zeros(len(valid), np.int64)
    keys[valid] = np.frombuffer(bytes.fromhex(raw.tobytes().decode("ascii")), ">u8").astype(
        np.uint64).view(np.int64)
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
    holds a settled answer for (`held`, filled by `add_stored`)."""

    keys: np.ndarray
    repeated: np.ndarray
    rows: int
    unhashed: int
    stored: np.ndarray = field(init=False)
    held: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        self.stored = np.zeros(len(self.keys), bool)

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

    def add_stored(self, batches: Iterator[pa.Table], requests: list[TaskRequest]) -> None:
        """Mark tonight's keys the stored rows (`text_sha256`, `task`, `target`, `status`;
        this model, tonight's prompt versions) hold, and per request those with a settled
        answer."""
        for r in requests:
            self.held.setdefault(r.key, np.zeros(len(self.keys), bool))
        for b in batches:
            keys, valid = hash_keys(b["text_sha256"])
            hit, index = _members(keys, self.keys)
            hit &= valid
            self.stored[index[hit]] = True
            settled = hit & pc.is_in(b["status"], pa.array(list(SETTLED))).to_numpy(
                zero_copy_only=False)
            for r in requests:
                mine = pc.equal(b["task"], r.task.name)
                mine = pc.and_(mine, pc.equal(b["target"], r.target) if r.target
                               else pc.is_null(b["target"]))
                mine = pc.fill_null(mine, False).to_numpy(zero_copy_only=False)
                self.held[r.key][index[settled & mine]] = True

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
