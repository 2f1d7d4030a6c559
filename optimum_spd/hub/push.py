"""Upload a checkpoint folder to the Hub in one commit, with errors a user can act on."""

from __future__ import annotations

import os

from huggingface_hub import HfApi
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id


class HubPushError(RuntimeError):
    """The upload failed; nothing local was changed and the same push can simply be run again."""


def checked_repo_id(repo_id: object) -> str:
    """``repo_id`` if it is a valid Hub repo id (``name`` or ``namespace/name``); a clear error otherwise.

    Checked before anything is built from it: a staging folder is named after it, so ``user/..`` must never reach
    a path.
    """
    if not isinstance(repo_id, str):
        raise ValueError(f"repo_id must be a string such as 'user/bert-mrpc-spd90', got {type(repo_id).__name__}.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(
            f"repo_id={repo_id!r} is not a valid Hub repo id ({error}). Use 'name' or 'namespace/name' with letters, "
            "digits, '-', '_' and '.', no '..' or '--', at most 96 characters."
        ) from None
    if repo_id.split("/")[-1] in (".", ".."):
        raise ValueError(f"repo_id={repo_id!r} is not a valid Hub repo id: its name cannot be '.' or '..'.")
    return repo_id


HUB_TIMEOUT_ENV = "OPTIMUM_SPD_HUB_TIMEOUT"
DEFAULT_HUB_TIMEOUT_S = 60.0


def hub_timeout_seconds() -> float:
    """Seconds a Hub connection may stay silent before a push gives up (``OPTIMUM_SPD_HUB_TIMEOUT``, default 60)."""
    text = os.environ.get(HUB_TIMEOUT_ENV)
    if text is None:
        return DEFAULT_HUB_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{HUB_TIMEOUT_ENV}={text!r} must be a number of seconds > 0, e.g. 60.")
    return value


def ensure_hub_timeouts() -> None:
    """Give huggingface_hub's shared HTTP client connect/read time-outs, unless the user installed their own client.

    huggingface_hub's default client has no time-out at all, so a Hub that accepts the connection and never answers
    would hang a push forever. Only its *default* factory is replaced (a custom ``set_client_factory`` is respected).
    """
    from huggingface_hub.utils import _http

    if getattr(_http, "_GLOBAL_CLIENT_FACTORY", None) is not _http.default_client_factory:
        return
    seconds = hub_timeout_seconds()

    def client_with_timeouts():
        client = _http.default_client_factory()
        client.timeout = type(client.timeout)(seconds, connect=min(seconds, 10.0))
        return client

    _http.set_client_factory(client_with_timeouts)


def push_folder(
    folder: str,
    repo_id: str,
    *,
    token: str | bool | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload sparse model (optimum-spd)",
    commit_description: str | None = None,
    create_pr: bool = False,
) -> str:
    """Create ``repo_id`` if needed and upload every file of ``folder`` in one commit; return the commit URL."""
    checked_repo_id(repo_id)
    ensure_hub_timeouts()
    api = HfApi(token=token)
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo.repo_id,
            folder_path=folder,
            commit_message=commit_message,
            commit_description=commit_description,
            revision=revision,
            create_pr=create_pr,
        )
    except Exception as error:  # HTTP errors, dropped connections, timeouts: all end the same way for the user
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no details'}"
        if isinstance(token, str) and token:
            reason = reason.replace(token, "<token>")
        hint = ""
        if "timeout" in type(error).__name__.lower() or "timed out" in str(error).lower():
            hint = (
                f" The Hub did not answer within {hub_timeout_seconds():g} s: check HF_ENDPOINT and your network, "
                f"or raise {HUB_TIMEOUT_ENV}."
            )
        raise HubPushError(
            f"pushing {folder} to the Hub repo {repo_id} failed ({reason}). Nothing local was changed; run the same "
            f"push again to retry.{hint}"
        ) from error
    return commit.commit_url
