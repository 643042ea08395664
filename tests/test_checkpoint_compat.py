"""A checkpoint written before issue 20's restructuring still resumes, to the weights an uninterrupted run reaches.

The fixtures in `tests/fixtures/pre20/` were written once by `make.py` at the code before the change (54def95):
`checkpoint-2/` of a 2-step run and the weights of an uninterrupted 4-step run, per training script. Resuming the
checkpoint to step 4 guards the checkpoint's file names, the `ema_unet` / `regularizer` extra-state keys,
`run_settings.json` (the flag names compared on resume), `rank_state["noise_rng"]` and the epoch / skipped-batch
arithmetic of a mid-epoch resume.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "pre20"
spec = importlib.util.spec_from_file_location("make_pre20_fixtures", FIXTURES / "make.py")
make = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make)


@pytest.mark.parametrize("kind", ["spectral", "autoencoder"])
def test_a_pre_issue_20_checkpoint_resumes_to_the_same_weights(kind, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SPECREG_NUM_THREADS", "1")
    fixture = FIXTURES / kind
    for name in ("unet_config", "vae"):  # the model inputs the runs read
        if (fixture / name).is_dir():
            shutil.copytree(fixture / name, tmp_path / name)
    for name in make.KEPT:  # the interrupted run's folder, as it left it
        copy = shutil.copytree if (fixture / name).is_dir() else shutil.copy2
        copy(fixture / name, tmp_path / "out" / name)
    make.write_inputs(kind, tmp_path)
    main, args = make.main_of(kind)
    monkeypatch.chdir(tmp_path)  # the runs' settings record relative paths

    resume = ["--output_dir", "out", "--max_train_steps", "4", "--resume_from_checkpoint", "latest"]
    with caplog.at_level(logging.INFO):
        assert main([*args, *resume]) == 0

    resumed = [record.getMessage() for record in caplog.records if "Resumed from" in record.getMessage()]
    assert resumed and "at step 2" in resumed[0], resumed
    assert not [r for r in caplog.records if "changed settings" in r.getMessage()]  # the same flags: nothing to warn
    source, target = make.FINAL_WEIGHTS[kind]
    reached, expected = load_file(tmp_path / "out" / source), load_file(fixture / target)
    assert reached.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(reached[key], expected[key], rtol=0, atol=1e-6, msg=key)


def test_a_script_s_own_incompatible_flags_are_refused_on_resume(caplog):
    from diffusers_specreg.train import manifest
    from diffusers_specreg.train.checkpoint import read_run_settings

    checkpoint = FIXTURES / "autoencoder" / "checkpoint-2"
    current = read_run_settings(str(checkpoint))
    current["latent_regularizer"] = ["esm"]
    with caplog.at_level(logging.WARNING):
        manifest.check_resume_settings(str(checkpoint), current)  # by default only a changed setting: a warning
    assert "--latent_regularizer" in caplog.text
    with pytest.raises(ValueError, match=r"--latent_regularizer: \[\"kl\"\] in the checkpoint, \[\"esm\"\] now"):
        manifest.check_resume_settings(str(checkpoint), current, incompatible=("latent_regularizer",))


def test_another_objectives_flags_recorded_by_an_older_version_do_not_block_a_resume():
    from diffusers_specreg.train.manifest import compare_settings

    # a DDPM run of an older version recorded --flow_shift 3 (then silently ignored); the flag is refused with ddpm
    # now, so the resumed run cannot repeat it: the value has no effect on DDPM and is not compared
    assert compare_settings(
        {"formulation": "ddpm", "flow_shift": 3.0}, {"formulation": "ddpm", "flow_shift": None}
    ) == (
        [],
        [],
    )
    assert compare_settings({"formulation": "sagd", "edm_p_mean": -1.0}, {"formulation": "sagd"}) == ([], [])
    # the objective's own flags still are compared: flow's shift cannot change, EDM's P_mean warns
    errors, _ = compare_settings(
        {"formulation": "flow", "flow_shift": 3.0}, {"formulation": "flow", "flow_shift": 1.0}
    )
    assert errors == ["--flow_shift: 3.0 in the checkpoint, 1.0 now"]
    _, warnings = compare_settings(
        {"formulation": "edm", "edm_p_mean": -1.0}, {"formulation": "edm", "edm_p_mean": 0.0}
    )
    assert warnings == ["--edm_p_mean: -1.0 in the checkpoint, 0.0 now"]
