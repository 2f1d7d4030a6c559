import json
import subprocess
import sys

import pytest
from test_serialization import pruned_model

from optimum.commands.register.register_spd import main
from optimum_spd import compress


@pytest.fixture
def checkpoints(tmp_path):
    model = pruned_model(sparsity=0.9)
    model.save_pretrained(tmp_path / "dense")
    compress(model, tmp_path / "sparse")
    return tmp_path


def test_info_reports_layers_and_sizes(checkpoints, capsys):
    assert main(["info", str(checkpoints / "sparse"), "--tensors"]) == 0
    out = capsys.readouterr().out
    assert "prunable_sparsity=0.9004" in out and "smaller" in out and "bitmask" in out
    assert main(["info", str(checkpoints / "sparse"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["tensors"]) == 12 and summary["stored_bytes"] < summary["dense_bytes"]
    assert main(["info", str(checkpoints / "dense")]) == 0  # a vanilla checkpoint is measured from its weights
    assert "prunable_sparsity=0.9004" in capsys.readouterr().out


def test_compress_decompress_verify(checkpoints, capsys):
    assert main(["compress", str(checkpoints / "dense"), str(checkpoints / "c16"), "--storage_dtype", "float16"]) == 0
    assert main(["verify", str(checkpoints / "sparse"), "--reference", str(checkpoints / "dense")]) == 0
    assert "OK" in capsys.readouterr().out
    # fp16 storage rounds the weights: a tight tolerance must fail, and say so.
    assert main(["verify", str(checkpoints / "c16"), "--reference", str(checkpoints / "dense"), "--atol", "1e-9"]) == 1
    assert "FAIL logits differ" in (out := capsys.readouterr().out) and "must hold the same weights" in out
    assert main(["decompress", str(checkpoints / "sparse"), str(checkpoints / "back")]) == 0
    assert "decompressed" in capsys.readouterr().out  # success says so
    assert json.loads((checkpoints / "back" / "config.json").read_text())["model_type"] == "bert"


def test_errors_are_one_line_not_tracebacks(checkpoints, capsys):
    assert main(["decompress", str(checkpoints / "dense"), str(checkpoints / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("optimum-spd decompress: error:") and "plain dense checkpoint" in err
    assert not (checkpoints / "x").exists()


def test_optimum_cli_plugin_is_registered_and_light(checkpoints):
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, optimum.commands.register.register_spd as r; "
            "print('torch' in sys.modules, 'optimum_spd' in sys.modules, len(r.REGISTER_COMMANDS))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.split() == ["False", "False", "1"]  # optimum-cli start-up stays cheap for every plug-in
    # Through this interpreter, not PATH: the suite must pass with a venv's python that is not activated.
    result = subprocess.run(
        [sys.executable, "-m", "optimum.commands.optimum_cli", "spd", "info", str(checkpoints / "sparse")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "prunable_sparsity=0.9004" in result.stdout


def test_optimum_spd_help_imports_neither_torch_nor_transformers():
    code = (
        "import sys\n"
        "from optimum.commands.register.register_spd import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as exit:\n    assert exit.code == 0\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules, 'optimum_spd' in sys.modules)"
    )
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "info,compress,decompress,verify,export,card,push" in probe.stdout
    assert probe.stdout.split()[-3:] == ["False", "False", "False"]
