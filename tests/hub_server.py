"""A small in-memory stand-in for the Hugging Face Hub HTTP API, on 127.0.0.1, for offline tests.

It implements what `huggingface_hub` 2.x calls to publish and read repositories, from its source
(`hf_api.py`, `_commit_api.py`, `file_download.py`):

- `POST /api/repos/create` (409 when the repository exists), `POST /api/validate-yaml` (parses the card's
  YAML header, 400 on an error);
- `POST /api/{type}s/{repo}/preupload/{revision}`: every file is uploaded "regular" (base64 inside the
  commit), so no LFS or Xet storage is needed; the `oid` of an unchanged file lets the client skip it;
- `POST /api/{type}s/{repo}/commit/{revision}`: the NDJSON commit (header, `file`, `deletedFile`);
- `GET /api/{type}s/{repo}[/revision/{revision}]` (repository info), `GET .../tree/{revision}[/{path}]`,
  `POST .../paths-info/{revision}`;
- `HEAD`/`GET /[{type}s/]{repo}/resolve/{revision}/{path}` with `X-Repo-Commit`, `ETag` and byte ranges.

`FakeHub.fail_commits` makes the commit endpoint answer 500 for the repositories it names (a failed
upload); `requests` records every request; `unhandled` the ones no route matched (a test asserts it empty).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a blob (what the Hub reports as a regular file's oid)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Repository:
    repo_id: str
    repo_type: str
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[str] = field(default_factory=list)

    @property
    def sha(self) -> str:
        return self.commits[-1] if self.commits else "0" * 40

    def folders(self) -> set[str]:
        folders = set()
        for path in self.files:
            parts = path.split("/")[:-1]
            folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return folders


class FakeHub:
    """The server's state; `start()` serves it on a free port and returns the endpoint URL."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repository] = {}
        self.fail_commits: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        self.unhandled: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        hub = self

        class Handler(_Handler):
            state = hub

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self.endpoint

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def repo(self, repo_id: str, repo_type: str = "model") -> Repository:
        return self.repos[repo_type, repo_id]


def _repo_path(path: str) -> tuple[str, str, str] | None:
    """("model"|"dataset", repo id, rest) for /api/{type}s/{user}/{name}/..."""
    match = re.match(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)(/.*)?$", path)
    return (TYPES[match.group(1)], match.group(2), match.group(3) or "") if match else None


class _Handler(BaseHTTPRequestHandler):
    state: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:  # keep the test output quiet
        pass

    # ------------------------------------------------------------------------------------------ plumbing
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _json(self, status: int, data, headers: dict | None = None) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, message: str, code: str | None = None, head: bool = False) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message}).encode(), headers, head=head)

    def _unhandled(self, method: str) -> None:
        self.state.unhandled.append((method, self.path))
        self._error(404, f"fake hub: no route for {method} {self.path}")

    def _find(self, repo_type: str, repo_id: str, head: bool = False) -> Repository | None:
        repo = self.state.repos.get((repo_type, repo_id))
        if repo is None:
            self._error(404, f"Repository {repo_id} not found", "RepoNotFound", head=head)
        return repo

    # ------------------------------------------------------------------------------------------- routes
    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        self.state.requests.append(("POST", self.path))
        body = self._body()
        if path == "/api/repos/create":
            return self._create(json.loads(body))
        if path == "/api/validate-yaml":
            return self._validate_yaml(json.loads(body))
        parsed = _repo_path(path)
        if parsed:
            repo_type, repo_id, rest = parsed
            if rest.startswith("/preupload/"):
                return self._preupload(repo_type, repo_id, json.loads(body))
            if rest.startswith("/commit/"):
                return self._commit(repo_type, repo_id, body)
            if rest.startswith("/paths-info/"):
                return self._paths_info(repo_type, repo_id, body)
        self._unhandled("POST")

    def do_GET(self) -> None:
        self._get(head=False)

    def do_HEAD(self) -> None:
        self._get(head=True)

    def _get(self, head: bool) -> None:
        method = "HEAD" if head else "GET"
        self.state.requests.append((method, self.path))
        split = urlsplit(self.path)
        path, query = unquote(split.path), parse_qs(split.query)
        match = re.match(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if match and not path.startswith("/api/"):
            repo_type = TYPES.get(match.group(1) or "models")
            return self._resolve(repo_type, match.group(2), match.group(3), match.group(4), head)
        parsed = _repo_path(path)
        if parsed and not head:
            repo_type, repo_id, rest = parsed
            if rest == "" or re.match(r"^/revision/[^/]+$", rest):
                return self._info(repo_type, repo_id)
            tree = re.match(r"^/tree/([^/]+)(?:/(.*))?$", rest)
            if tree:
                recursive = query.get("recursive", ["false"])[0].lower() == "true"
                return self._tree(repo_type, repo_id, (tree.group(2) or "").strip("/"), recursive)
        self._unhandled(method)

    # --------------------------------------------------------------------------------------------- write
    def _create(self, payload: dict) -> None:
        repo_type = payload.get("type") or "model"
        repo_id = (
            f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        )
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.state.endpoint}/{prefix}{repo_id}"
        with self.state.lock:
            if (repo_type, repo_id) in self.state.repos:
                return self._json(409, {"error": "You already created this repo", "url": url})
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            self.state.repos[repo_type, repo_id] = Repository(repo_id, repo_type, private)
        self._json(200, {"url": url, "name": repo_id})

    def _validate_yaml(self, payload: dict) -> None:
        content = payload.get("content", "")
        match = re.match(r"^---\n(.*?)\n---", content, flags=re.S)
        try:
            yaml.safe_load(match.group(1) if match else "")
        except yaml.YAMLError as error:
            return self._json(400, {"errors": [{"message": str(error)}], "warnings": []})
        self._json(200, {"errors": [], "warnings": []})

    def _preupload(self, repo_type: str, repo_id: str, payload: dict) -> None:
        repo = self._find(repo_type, repo_id)
        if repo is None:
            return
        files = []
        for entry in payload["files"]:
            existing = repo.files.get(entry["path"])
            oid = git_blob_sha1(existing) if existing is not None else None
            files.append({"path": entry["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": oid})
        self._json(200, {"files": files, "commitOid": repo.sha})

    def _commit(self, repo_type: str, repo_id: str, body: bytes) -> None:
        repo = self._find(repo_type, repo_id)
        if repo is None:
            return
        if repo_id in self.state.fail_commits:
            return self._error(500, "Internal Error - injected failure of the fake hub")
        additions, deletions, summary = {}, [], ""
        for line in body.splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value.get("summary", "")
            elif key == "file":
                additions[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                deletions.append(value["path"])
            else:
                return self._error(400, f"fake hub: commit operation {key!r} is not supported")
        with self.state.lock:
            repo.files.update(additions)
            for name in deletions:
                repo.files.pop(name, None)
            sha = hashlib.sha1(
                f"{repo.sha}{summary}{sorted(additions)}{len(repo.commits)}".encode()
            ).hexdigest()
            repo.commits.append(sha)
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        self._json(
            200,
            {
                "commitUrl": f"{self.state.endpoint}/{prefix}{repo_id}/commit/{sha}",
                "commitOid": sha,
                "pullRequestUrl": None,
            },
        )

    # ---------------------------------------------------------------------------------------------- read
    def _entry(self, repo: Repository, path: str) -> dict | None:
        if path in repo.files:
            content = repo.files[path]
            return {"type": "file", "path": path, "size": len(content), "oid": git_blob_sha1(content)}
        if path in repo.folders():
            return {"type": "directory", "path": path, "oid": hashlib.sha1(path.encode()).hexdigest()}
        return None

    def _info(self, repo_type: str, repo_id: str) -> None:
        repo = self._find(repo_type, repo_id)
        if repo is None:
            return
        siblings = [{"rfilename": name, "size": len(content)} for name, content in sorted(repo.files.items())]
        self._json(
            200,
            {
                "id": repo_id,
                "_id": repo_id,
                "sha": repo.sha,
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "siblings": siblings,
                "tags": [],
                "lastModified": "2026-01-01T00:00:00.000Z",
                "createdAt": "2026-01-01T00:00:00.000Z",
            },
        )

    def _tree(self, repo_type: str, repo_id: str, folder: str, recursive: bool) -> None:
        repo = self._find(repo_type, repo_id)
        if repo is None:
            return
        if folder and folder not in repo.folders():
            return self._error(404, f"{folder} does not exist", "EntryNotFound")
        prefix = f"{folder}/" if folder else ""
        names = set()
        for path in list(repo.files) + sorted(repo.folders()):
            if not path.startswith(prefix) or path == folder:
                continue
            if recursive or "/" not in path[len(prefix) :]:
                names.add(path)
        self._json(200, [self._entry(repo, name) for name in sorted(names)])

    def _paths_info(self, repo_type: str, repo_id: str, body: bytes) -> None:
        repo = self._find(repo_type, repo_id)
        if repo is None:
            return
        form = parse_qs(body.decode())
        paths = form.get("paths", [])
        if not paths and body.startswith(b"{"):
            paths = json.loads(body).get("paths", [])
        entries = [self._entry(repo, p.strip("/")) for p in paths]
        self._json(200, [e for e in entries if e is not None])

    def _resolve(self, repo_type: str, repo_id: str, revision: str, name: str, head: bool) -> None:
        repo = self._find(repo_type, repo_id, head=head)
        if repo is None:
            return
        if revision not in ("main", repo.sha):
            return self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound", head=head)
        if name not in repo.files:
            return self._error(404, f"Entry not found: {name}", "EntryNotFound", head=head)
        content = repo.files[name]
        headers = {
            "X-Repo-Commit": repo.sha,
            "ETag": f'"{git_blob_sha1(content)}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        ranged = re.match(r"^bytes=(\d+)-(\d*)$", self.headers.get("Range", ""))
        if ranged:
            start = int(ranged.group(1))
            end = int(ranged.group(2)) if ranged.group(2) else len(content) - 1
            part = content[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{start + len(part) - 1}/{len(content)}"
            return self._send(206, part, headers, head=head)
        self._send(200, content, headers, head=head)
