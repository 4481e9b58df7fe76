"""A client for `flipsketch serve` that needs only the standard library.

It runs inside Blender's Python (no pip installs there), in scripts and on
farms. Every failure is a ClientError whose message a UI can show as it is:
what went wrong, and in `hint` what to do about it.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

FINAL_STATES = ("done", "failed", "cancelled")


class ClientError(Exception):
    def __init__(self, message: str, hint: str = "", status: int | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint, self.status, self.field = message, hint, status, field

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip()


def inside(root: str | Path, name: str) -> Path:
    """`root / name` for a relative name that a server or a record gave us,
    refusing any name that could leave `root`.

    Accepted: forward-slash paths of plain parts (`variant_0/frame_0000.png`).
    Refused, with a ClientError: absolute names, drive letters and streams
    (any `:`), backslash and UNC paths, `..` or empty parts, control characters.
    The check is on the name itself, so it holds on every platform."""
    bad = (
        not isinstance(name, str)
        or not name
        or any(c in "\\:" or ord(c) < 32 for c in name)
        or any(part in ("", ".", "..") for part in name.split("/"))
    )
    if bad:
        raise ClientError(
            f"Refused the file name {name!r}: it would be written outside {root}.",
            "The server or the results folder is not trustworthy; nothing was written outside the folder.",
        )
    return Path(root, *name.split("/"))


class Client:
    """Talks to one FlipSketch server.

    GET-like calls are retried on connection failures (the server may be
    starting); a submission is sent once, so a job is never queued twice."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0, retries: int = 3) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = retries

    @classmethod
    def from_ready_file(cls, path: str | Path, **kwargs: Any) -> Client:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(info["url"], info["token"], **kwargs)

    def _open(self, method: str, path: str, body: bytes | None = None, timeout: float | None = None) -> Any:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            headers["Content-Type"] = "application/json"
        attempts = 1 if method == "POST" and path in ("/v1/jobs", "/v1/train") else self.retries + 1
        for attempt in range(attempts):
            request = urllib.request.Request(self.url + path, data=body, headers=headers, method=method)
            try:
                return urllib.request.urlopen(request, timeout=timeout or self.timeout)
            except urllib.error.HTTPError as exc:
                raise self._http_error(exc) from None
            except (TimeoutError, urllib.error.URLError, ConnectionError) as exc:
                if attempt + 1 == attempts:
                    reason = getattr(exc, "reason", exc)
                    raise ClientError(
                        f"Cannot reach the FlipSketch server at {self.url} ({reason}).",
                        "Check that the server is running and the URL is right.",
                    ) from None
                time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    @staticmethod
    def _http_error(exc: urllib.error.HTTPError) -> ClientError:
        try:
            error = json.loads(exc.read()).get("error", {})
        except (ValueError, AttributeError):
            error = {}
        if exc.code == 401:
            return ClientError("The server rejected the token.", "Check the token in the add-on preferences.", 401)
        message = error.get("message") or f"The server answered {exc.code} {exc.reason}."
        return ClientError(message, error.get("hint") or "", exc.code, error.get("field"))

    def _json(self, method: str, path: str, payload: Any = None) -> Any:
        body = json.dumps(payload).encode() if payload is not None else None
        with self._open(method, path, body) as response:
            return json.loads(response.read())

    def health(self) -> dict[str, Any]:
        return self._json("GET", "/v1/health")

    def capabilities(self) -> dict[str, Any]:
        return self._json("GET", "/v1/capabilities")

    def submit(
        self,
        params: dict[str, Any],
        *,
        sketch_png: bytes | None = None,
        strokes: dict[str, Any] | None = None,
        model: str | None = None,
        subfolder: str | None = None,
        revision: str | None = None,
        fps: int = 10,
        segment: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Queue an animate job with the sketch as PNG bytes or stroke polylines;
        `segment={"first_index": n}` makes it the continuation of a clip of n frames."""
        payload: dict[str, Any] = {"params": params, "fps": fps}
        if segment is not None:
            payload["segment"] = segment
        if sketch_png is not None:
            payload["sketch_png"] = base64.b64encode(sketch_png).decode("ascii")
        if strokes is not None:
            payload["strokes"] = strokes
        if model:
            payload.update(model=model, subfolder=subfolder, revision=revision)
        return self._json("POST", "/v1/jobs", payload)

    def train(
        self,
        data: str | Path,
        out: str | Path,
        config: dict[str, Any] | None = None,
        *,
        resume: bool = False,
        overwrite: bool = False,
        model: str | None = None,
    ) -> dict[str, Any]:
        """Queue a LoRA training run on the server's GPU. `data` and `out` are
        folders on the server's machine; follow it with events()/wait() like a
        job, and download() fetches the adapter, run.json and previews."""
        payload: dict[str, Any] = {"data": str(data), "out": str(out), "config": config or {}}
        payload.update(resume=resume, overwrite=overwrite)
        if model:
            payload["model"] = model
        return self._json("POST", "/v1/train", payload)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{urllib.parse.quote(job_id, safe='')}")

    def jobs(self) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/jobs")["jobs"]

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/jobs/{urllib.parse.quote(job_id, safe='')}/cancel", {})

    def delete(self, job_id: str) -> None:
        self._json("DELETE", f"/v1/jobs/{urllib.parse.quote(job_id, safe='')}")

    def events(self, job_id: str, idle_timeout: float = 600.0) -> Iterator[dict[str, Any]]:
        """Server-sent events of one job until it ends: state changes and progress."""
        path = f"/v1/jobs/{urllib.parse.quote(job_id, safe='')}/events"
        ended = False
        with self._open("GET", path, timeout=idle_timeout) as response:
            data: list[str] = []
            try:
                for raw in response:
                    line = raw.decode("utf-8").rstrip("\r\n")
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        event = json.loads("\n".join(data))
                        ended = event.get("state") in FINAL_STATES
                        yield event
                        data = []
            except (OSError, http.client.HTTPException):
                pass
        if not ended:  # the server closes a stream only after a job's final state
            raise ClientError(
                f"Lost the connection to the FlipSketch server at {self.url} before the job ended.",
                "The server may have stopped; try again.",
            )

    def wait(self, job_id: str, on_event: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Follow a job's events to its end; return its final status."""
        for event in self.events(job_id):
            if on_event:
                on_event(event)
        return self.job(job_id)

    def download(self, job_id: str, dest: str | Path) -> list[Path]:
        """Fetch every result file into `dest`, which appears whole or not at all.

        Raises ClientError, before anything is written, when the server lists a
        name that would leave `dest` (see `inside`)."""
        job = self.job(job_id)
        if job["state"] != "done":
            raise ClientError(f"Job {job_id} is {job['state']}, it has no results.", "Wait until it is done.")
        dest = Path(dest)
        names = job.get("files")
        if not isinstance(names, list):
            raise ClientError(f"The server listed no files for job {job_id}.", "Update the backend.")
        for name in names:
            inside(dest, name)
        if len(set(names)) != len(names):
            raise ClientError(f"The server listed a file of job {job_id} twice.", "Update the backend.")
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
        try:
            for name in names:
                target = inside(partial, name)
                target.parent.mkdir(parents=True, exist_ok=True)
                path = f"/v1/jobs/{urllib.parse.quote(job_id, safe='')}/files/{urllib.parse.quote(name)}"
                with self._open("GET", path) as response, open(target, "xb") as out:
                    shutil.copyfileobj(response, out)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(partial, dest)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return [inside(dest, name) for name in names]
