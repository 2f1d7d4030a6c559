"""A strict, in-memory, Hub-compatible HTTP server on 127.0.0.1 for end-to-end push/pull tests.

It speaks the slice of the Hub protocol that ``huggingface_hub`` uses to create a repo, validate card YAML,
pre-upload, commit (NDJSON, files inlined as base64: every file is answered ``uploadMode: regular``), and to serve
model info, trees and file downloads. Anything else gets a 404 and is recorded in ``unexpected``, which tests
assert empty, so a protocol change fails a test instead of passing silently. ``fail_next`` injects failures
(an HTTP status, or ``"drop"`` to close the connection without answering) into the next matching requests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

import yaml

REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
REVISION = r"(?P<revision>[^/?]+)"


@dataclass
class Repository:
    private: bool = False
    commits: list[dict] = field(default_factory=list)  # each: {"oid", "files": {path: bytes}, "summary"}

    @property
    def head(self) -> dict:
        return self.commits[-1]


class FakeHub:
    """Start with ``FakeHub().start()``; ``endpoint`` is the value for ``HF_ENDPOINT``."""

    def __init__(self, token: str = "hf_fake_token"):
        self.token = token
        self.repos: dict[str, Repository] = {}
        self.unexpected: list[str] = []
        self.requests: list[str] = []
        self.fail_next: list[tuple[str, int | str]] = []  # (route name, status or "drop")
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            state = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def files(self, repo_id: str) -> dict[str, bytes]:
        return dict(self.repos[repo_id].head["files"])

    def all_uploaded_bytes(self) -> bytes:
        return b"".join(
            content for repo in self.repos.values() for commit in repo.commits for content in commit["files"].values()
        )


class _Handler(BaseHTTPRequestHandler):
    state: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    # --- plumbing -------------------------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes | dict | list = b"", headers: dict | None = None, head: bool = False):
        payload = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        self.send_response(status)
        if isinstance(body, (dict, list)):
            self.send_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if not head:
            self.wfile.write(payload)

    def _error(self, status: int, message: str, code: str | None = None, head: bool = False):
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, {"error": message}, headers, head=head)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _authorized(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {self.state.token}"

    def _inject(self, route: str) -> bool:
        """Apply an injected failure for ``route``; True when the request was answered (or dropped)."""
        with self.state.lock:
            for index, (name, outcome) in enumerate(self.state.fail_next):  # noqa: B007 (used after the break)
                if name == route:
                    del self.state.fail_next[index]
                    break
            else:
                return False
        if outcome == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return True
        self._error(int(outcome), f"injected failure on {route}")
        return True

    def _dispatch(self, method: str):
        path = urlparse(self.path).path
        self.state.requests.append(f"{method} {path}")
        for route_method, pattern, handler in ROUTES:
            match = re.fullmatch(pattern, path)
            if route_method == method and match:
                if self._inject(handler.__name__):
                    return
                return handler(self, **{key: unquote(value) for key, value in match.groupdict().items()})
        self.state.unexpected.append(f"{method} {self.path}")
        self._error(404, f"fake hub: unknown route {method} {path}")

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    # --- routes ---------------------------------------------------------------------------------------------------

    def whoami(self):
        if not self._authorized():
            return self._error(401, "Invalid credentials in Authorization header")
        self._send(
            200,
            {
                "type": "user",
                "name": "tester",
                "fullname": "Tester",
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"role": "write"}},
            },
        )

    def create_repo(self):
        if not self._authorized():
            return self._error(401, "Invalid credentials in Authorization header")
        request = json.loads(self._body())
        unknown = set(request) - {"name", "organization", "type", "private", "sdk", "visibility"}
        if unknown or request.get("type", "model") != "model":
            self.state.unexpected.append(f"create_repo {request}")
            return self._error(400, f"fake hub: unsupported repo creation {request}")
        repo_id = f"{request.get('organization') or 'tester'}/{request['name']}"
        with self.state.lock:
            if repo_id in self.state.repos:
                return self._send(
                    409, {"error": "You already created this model repo", "url": f"{self.state.endpoint}/{repo_id}"}
                )
            self.state.repos[repo_id] = Repository(
                private=bool(request.get("private")),
                commits=[{"oid": _oid(b"init" + repo_id.encode()), "files": {}, "summary": "initial"}],
            )
        self._send(200, {"url": f"{self.state.endpoint}/{repo_id}", "name": repo_id})

    def validate_yaml(self):
        """Parse the card's front matter like the Hub does; model-index must be well formed."""
        content = json.loads(self._body())["content"]
        match = re.match(r"^---\n(.*?)\n---\n", content, re.DOTALL)
        errors = []
        try:
            metadata = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as error:
            metadata, errors = None, [f"Invalid YAML: {error}"]
        if metadata is not None and not isinstance(metadata, dict):
            errors.append("metadata must be a mapping")
        for result in (
            (metadata or {}).get("model-index", [{}])[0].get("results", []) if isinstance(metadata, dict) else []
        ):
            if not {"task", "dataset", "metrics"} <= set(result):
                errors.append(f"model-index result lacks task/dataset/metrics: {sorted(result)}")
        if errors:
            return self._send(400, {"errors": [{"message": error} for error in errors]})
        self._send(200, {"errors": [], "warnings": []})

    def preupload(self, repo: str, revision: str):
        if repo not in self.state.repos:
            return self._error(404, "Repository not found", "RepoNotFound")
        request = json.loads(self._body())
        files = [
            {"path": item["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
            for item in request["files"]
        ]
        self._send(200, {"files": files, "commitOid": self.state.repos[repo].head["oid"]})

    def commit(self, repo: str, revision: str):
        if not self._authorized():
            return self._error(401, "Invalid credentials in Authorization header")
        if repo not in self.state.repos:
            return self._error(404, "Repository not found", "RepoNotFound")
        if revision != "main":
            self.state.unexpected.append(f"commit to revision {revision}")
            return self._error(400, "fake hub: only main is supported")
        repository = self.state.repos[repo]
        files = dict(repository.head["files"])
        summary = None
        for line in self._body().splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            key, value = entry["key"], entry["value"]
            if key == "header":
                summary = value.get("summary")
            elif key == "file":
                if value.get("encoding") != "base64":
                    self.state.unexpected.append(f"file encoding {value.get('encoding')}")
                    return self._error(400, "fake hub: files must be inlined as base64")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            else:
                self.state.unexpected.append(f"commit operation {key}")
                return self._error(400, f"fake hub: unsupported commit operation {key}")
        oid = _oid(
            json.dumps(sorted((path, _oid(content)) for path, content in files.items())).encode()
            + str(time.time_ns()).encode()
        )
        repository.commits.append({"oid": oid, "files": files, "summary": summary})
        self._send(
            200, {"commitUrl": f"{self.state.endpoint}/{repo}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}
        )

    def _commit_for(self, repo: str, revision: str) -> dict | None:
        repository = self.state.repos.get(repo)
        if repository is None:
            return None
        if revision in ("main", None):
            return repository.head
        return next((commit for commit in repository.commits if commit["oid"] == revision), None)

    def model_info(self, repo: str, revision: str = "main"):
        commit = self._commit_for(repo, revision)
        if commit is None:
            return self._error(404, "Repository not found", "RepoNotFound")
        siblings = [{"rfilename": path} for path in sorted(commit["files"])]
        self._send(
            200,
            {
                "id": repo,
                "modelId": repo,
                "sha": commit["oid"],
                "siblings": siblings,
                "private": self.state.repos[repo].private,
                "tags": [],
                "lastModified": "2026-01-01T00:00:00.000Z",
            },
        )

    def tree(self, repo: str, revision: str, subpath: str = ""):
        commit = self._commit_for(repo, revision)
        if commit is None:
            return self._error(404, "Repository not found", "RepoNotFound")
        entries = [
            {"type": "file", "path": path, "size": len(content), "oid": _oid(content)}
            for path, content in sorted(commit["files"].items())
            if path.startswith(subpath)
        ]
        self._send(200, entries)

    def resolve(self, repo: str, revision: str, filename: str):
        head = self.command == "HEAD"
        commit = self._commit_for(repo, revision)
        if commit is None:
            return self._error(404, "Repository not found", "RepoNotFound", head=head)
        if filename not in commit["files"]:
            return self._error(404, "Entry not found", "EntryNotFound", head=head)
        content = commit["files"][filename]
        headers = {
            "X-Repo-Commit": commit["oid"],
            "ETag": f'"{_oid(content)}"',
            "Content-Type": "application/octet-stream",
        }
        self._send(200, content, headers, head=head)


def _oid(content: bytes) -> str:
    return hashlib.sha1(content).hexdigest()


ROUTES = [
    ("GET", r"/api/whoami-v2", _Handler.whoami),
    ("POST", r"/api/repos/create", _Handler.create_repo),
    ("POST", r"/api/validate-yaml", _Handler.validate_yaml),
    ("POST", rf"/api/models/{REPO}/preupload/{REVISION}", _Handler.preupload),
    ("POST", rf"/api/models/{REPO}/commit/{REVISION}", _Handler.commit),
    ("GET", rf"/api/models/{REPO}", _Handler.model_info),
    ("GET", rf"/api/models/{REPO}/revision/{REVISION}", _Handler.model_info),
    ("GET", rf"/api/models/{REPO}/tree/{REVISION}", _Handler.tree),
    ("GET", rf"/api/models/{REPO}/tree/{REVISION}/(?P<subpath>.+)", _Handler.tree),
    ("HEAD", rf"/{REPO}/resolve/{REVISION}/(?P<filename>.+)", _Handler.resolve),
    ("GET", rf"/{REPO}/resolve/{REVISION}/(?P<filename>.+)", _Handler.resolve),
]
