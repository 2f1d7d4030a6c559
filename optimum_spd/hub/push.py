"""Upload a checkpoint folder to the Hub in one commit, with errors a user can act on."""

from __future__ import annotations

from huggingface_hub import HfApi


class HubPushError(RuntimeError):
    """The upload failed; nothing local was changed and the same push can simply be run again."""


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
    api = HfApi(token=token)
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo.repo_id, folder_path=folder, commit_message=commit_message,
            commit_description=commit_description, revision=revision, create_pr=create_pr,
        )
    except Exception as error:  # HTTP errors, dropped connections, timeouts: all end the same way for the user
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no details'}"
        if isinstance(token, str) and token:
            reason = reason.replace(token, "<token>")
        raise HubPushError(
            f"pushing {folder} to the Hub repo {repo_id} failed ({reason}). Nothing local was changed; run the same "
            "push again to retry."
        ) from error
    return commit.commit_url
