"""One writer per annotation table: a lease object `_lock.json` at the table root.

Delta keeps the table right whatever runs at once (each chunk is one transaction, idempotent
by run and chunk), so the lease is not there for correctness: it is there for cost. Two runs of
the same night would both pay the GPUs for the same rows, since neither sees the other's
uncommitted work in its incremental check. A run takes the lease before that check and keeps
it until its last commit.

The lease is created with a conditional write (S3 `If-None-Match: *`, or O_EXCL locally) and
renewed by a timer thread every `ttl_s / 4`, however long a batch takes. A conditional write
refused because its own earlier attempt landed (the reply was lost, botocore retried) is
recognised: the lease then holds this run's own body. A lease whose holder
stopped renewing for its `ttl_s`, or whose process on this host is gone, is stale and may be taken
over, atomically: S3 replaces it with `If-Match` on the stale ETag; locally the compare and the
replace happen under an OS file lock (`filelock`), so two takers cannot both win. A holder whose
renewal finds the lease taken stops before its next commit.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from datetime import datetime, timezone

from filelock import FileLock

from emoray.config import S3Config
from emoray.errors import EXIT_LOCKED, EmorayError

LOCK = "_lock.json"


class LockedError(EmorayError, RuntimeError):
    """Another live run holds the table."""

    exit_code = EXIT_LOCKED


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _LocalStore:
    """Local lease file; the ETag is the content's hash. Replace and delete compare and act
    under an OS file lock on `<lease>.guard`, so they are atomic against each other."""

    def __init__(self, path: str):
        self.path = path
        self.guard = FileLock(f"{path}.guard")

    def create(self, body: bytes) -> str | None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return None
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        return hashlib.sha256(body).hexdigest()

    def read(self) -> tuple[bytes, str] | None:
        try:
            with open(self.path, "rb") as f:
                body = f.read()
        except FileNotFoundError:
            return None
        return body, hashlib.sha256(body).hexdigest()

    def replace(self, body: bytes, etag: str) -> str | None:
        with self.guard:
            current = self.read()
            if current is None or current[1] != etag:
                return None
            tmp = f"{self.path}.{os.getpid()}.{threading.get_ident()}"
            with open(tmp, "wb") as f:
                f.write(body)
            os.replace(tmp, self.path)
            return hashlib.sha256(body).hexdigest()

    def delete(self, etag: str) -> None:
        with self.guard:
            current = self.read()
            if current is not None and current[1] == etag:
                os.unlink(self.path)


class _S3Store:
    def __init__(self, bucket: str, key: str, s3: S3Config):
        from emoray.lake import s3clients

        self.bucket, self.key = bucket, key
        self.client = s3clients.client(s3)

    def _put(self, body: bytes, **condition) -> str | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body,
                                          **condition)["ETag"]
        except ClientError as e:
            if e.response["Error"]["Code"] in ("PreconditionFailed", "ConditionalRequestConflict"):
                return None
            raise

    def create(self, body: bytes) -> str | None:
        return self._put(body, IfNoneMatch="*")

    def read(self) -> tuple[bytes, str] | None:
        try:
            r = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except self.client.exceptions.NoSuchKey:
            return None
        return r["Body"].read(), r["ETag"]

    def replace(self, body: bytes, etag: str) -> str | None:
        return self._put(body, IfMatch=etag)

    def delete(self, etag: str) -> None:
        current = self.read()
        if current is not None and current[1] == etag:
            self.client.delete_object(Bucket=self.bucket, Key=self.key)


class TableLock:
    """Lease on the table at `uri` for `run_id`; use as a context manager."""

    def __init__(self, uri: str, s3: S3Config, run_id: str, ttl_s: float):
        root = uri.rstrip("/")
        if root.startswith("s3://"):
            bucket, _, prefix = root[len("s3://"):].partition("/")
            self.store = _S3Store(bucket, f"{prefix}/{LOCK}".lstrip("/"), s3)
        else:
            os.makedirs(root, exist_ok=True)
            self.store = _LocalStore(os.path.join(os.path.abspath(root), LOCK))
        self.uri, self.run_id, self.ttl_s = uri, run_id, ttl_s
        self.etag: str | None = None
        self.lost: LockedError | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps({"run_id": self.run_id, "host": socket.gethostname(),
                           "pid": os.getpid(), "heartbeat": time.time(), "ttl_s": self.ttl_s,
                           "heartbeat_utc": datetime.now(timezone.utc).isoformat()}).encode()

    def _stale(self, holder: dict) -> bool:
        if time.time() - holder.get("heartbeat", 0) > holder.get("ttl_s", self.ttl_s):
            return True
        return holder.get("host") == socket.gethostname() and not _pid_alive(holder.get("pid", 0))

    def _mine(self, holder: dict) -> bool:
        """Whether the lease body `holder` is this run's own: a write whose reply was lost took
        effect, and its retry was then refused by its own condition."""
        return (holder.get("run_id"), holder.get("host"), holder.get("pid")) == (
            self.run_id, socket.gethostname(), os.getpid())

    def _ours(self) -> str | None:
        """The lease's ETag when the lease in the store is this run's own (`_mine`)."""
        current = self.store.read()
        return current[1] if current and self._mine(json.loads(current[0])) else None

    def acquire(self) -> None:
        self.etag = self.store.create(self._body())
        if self.etag is None:
            current = self.store.read()
            holder = json.loads(current[0]) if current else {}
            if current and self._mine(holder):
                self.etag = current[1]
                return
            if current and not self._stale(holder):
                raise LockedError(
                    f"table {self.uri} is being written by run {holder.get('run_id')} "
                    f"(host {holder.get('host')}, pid {holder.get('pid')}, last heartbeat "
                    f"{holder.get('heartbeat_utc')}); wait for it to finish, or remove "
                    f"{LOCK} if that run is known dead")
            self.etag = (self.store.replace(self._body(), current[1]) if current
                         else self.store.create(self._body())) or self._ours()
            if self.etag is None:
                raise LockedError(f"table {self.uri}: another run took the stale lease first")

    def renew(self) -> None:
        """Refresh the heartbeat now; fails if the lease was taken over."""
        etag = (self.store.replace(self._body(), self.etag) or self._ours()) if self.etag else None
        if etag is None:
            self.lost = LockedError(f"table {self.uri}: lease lost to another run; stopping")
            raise self.lost
        self.etag = etag

    def check(self) -> None:
        """Raise if the renewal timer found the lease taken over."""
        if self.lost is not None:
            raise self.lost

    def _renew_every(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            try:
                self.renew()
            except LockedError:
                return
            except Exception:  # a transient store error: the next tick tries again
                continue

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if self.etag is not None and self.lost is None:
            self.store.delete(self.etag)

    def __enter__(self) -> "TableLock":
        self.acquire()
        self._renewer = threading.Thread(target=self._renew_every, args=(self.ttl_s / 4,),
                                         daemon=True, name=f"emoray-lease-{self.run_id}")
        self._renewer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
