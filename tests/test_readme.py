"""The README's first Python snippet runs as printed, on a tiny local model and a tiny CSV."""

import os
import re
import subprocess
import sys

from helpers import WORDS, tiny_model, tiny_tokenizer

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def first_python_block() -> str:
    text = open(README, encoding="utf-8").read()
    return re.search(r"```python\n(.*?)```", text, flags=re.DOTALL).group(1)


def test_readme_snippet_runs(tmp_path):
    model_dir = tmp_path / "finetuned"
    tiny_tokenizer(str(model_dir)).save_pretrained(model_dir)
    tiny_model().save_pretrained(model_dir)
    for name, rows in (("train.csv", 40), ("dev.csv", 12)):
        lines = ["text,label"] + [
            f"{WORDS[i % 90]} {WORDS[(3 * i) % 90]} {WORDS[(7 * i) % 90]},{i % 2}" for i in range(rows)
        ]
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    snippet = first_python_block()
    assert '"path/to/your-finetuned-model"' in snippet
    script = tmp_path / "snippet.py"
    script.write_text(snippet.replace('"path/to/your-finetuned-model"', repr(str(model_dir))))
    environment = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "cache")}
    completed = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=environment
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    # The printed report: the promised sparsity (per-matrix keep counts round, so tiny matrices land just above 0.9).
    assert re.search(r"prunable_sparsity=0\.90\d\d over", completed.stdout), completed.stdout[-500:]
    assert (tmp_path / "out" / "config.json").is_file()
