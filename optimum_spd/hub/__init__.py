"""Model cards and Hub uploads for compressed SPD checkpoints."""

from .card import collect_card_context, license_of, render_model_card, write_run_info
from .push import HubPushError, push_folder

__all__ = ["HubPushError", "collect_card_context", "license_of", "push_folder", "render_model_card", "write_run_info"]
