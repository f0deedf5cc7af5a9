"""Mixed precision only where it exists, gradient accumulation, gradient checkpointing and the progress bar."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from common.device import DeviceUnavailable
from generation import train
from generation.trainer import check_mixed_precision, optimise, split_held_out
from tests.conftest import train_tiny


def test_mixed_precision_is_refused_on_the_cpu_by_flag(capsys):
    with pytest.raises(DeviceUnavailable, match="--mixed-precision bf16 trains on a CUDA GPU only; this run is on the cpu"):
        check_mixed_precision("bf16", torch.device("cpu"))
    with pytest.raises(SystemExit) as stopped:
        train.parse_args(["--data", "d", "--out", "o", "--device", "cpu", "--mixed-precision", "fp16"])
    assert stopped.value.code == 2
    assert "--mixed-precision fp16" in capsys.readouterr().err
    assert check_mixed_precision("no", torch.device("cpu")) == "no"


@pytest.mark.parametrize("has_bf16", [True, False])
def test_bf16_is_asked_for_only_on_a_gpu_that_has_it(monkeypatch, has_bf16):
    # This machine may have no GPU: the query torch answers is put in its place.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: has_bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "a test GPU")
    if has_bf16:
        assert check_mixed_precision("bf16", torch.device("cuda")) == "bf16"
    else:
        with pytest.raises(DeviceUnavailable, match=r"a test GPU\) has no bf16; use --mixed-precision fp16"):
            check_mixed_precision("bf16", torch.device("cuda"))
    assert check_mixed_precision("fp16", torch.device("cuda")) == "fp16"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_real_gpu_bf16_is_accepted_exactly_when_torch_says_it_exists():
    if torch.cuda.is_bf16_supported():
        assert check_mixed_precision("bf16", torch.device("cuda")) == "bf16"
    else:
        with pytest.raises(DeviceUnavailable):
            check_mixed_precision("bf16", torch.device("cuda"))


def test_two_accumulated_micro_steps_make_the_update_of_their_whole_batch():
    torch.manual_seed(0)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    whole, parts = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)
    parts.load_state_dict(whole.state_dict())
    sgd = torch.optim.SGD(whole.parameters(), lr=0.1)
    optimise(torch.nn.functional.mse_loss(whole(x), y), sgd)
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=2)
    model, optimizer = accelerator.prepare(parts, torch.optim.SGD(parts.parameters(), lr=0.1))
    for half in (slice(0, 4), slice(4, 8)):
        with accelerator.accumulate(model):
            optimise(torch.nn.functional.mse_loss(model(x[half]), y[half]), optimizer, accelerator=accelerator)
    for a, b in zip(whole.parameters(), parts.parameters()):
        torch.testing.assert_close(a, b)
    assert not torch.equal(whole.weight, torch.nn.Linear(3, 1).weight)


def test_gradient_checkpointing_gives_the_same_weights_and_the_bar_shows_eta_and_loss(tiny_run, tiny_data, tmp_path, capsys):
    out = train_tiny(tiny_data, tmp_path / "gc", "--gradient-checkpointing", "--progress", "bar")
    err = capsys.readouterr().err
    assert "autoencoder: 100%" in err and "train: 100%" in err and "stage 2 loss" in err and "<00:00" in err
    name = "unet/diffusion_pytorch_model.safetensors"
    plain, checkpointed = load_file(tiny_run / "checkpoint-4" / name), load_file(out / "checkpoint-4" / name)
    assert all(torch.equal(plain[k], checkpointed[k]) for k in plain)


def test_grad_accum_divides_the_batch_and_is_recorded(tiny_data, tmp_path, capsys):
    import json

    out = train_tiny(tiny_data, tmp_path / "accum", "--grad-accum", "2", "--no-validation")
    meta = json.loads((out / "checkpoint-4" / "polypturing.json").read_text())
    assert meta["schedule"]["grad_accum"] == 2
    with pytest.raises(SystemExit):
        train.parse_args(["--data", "d", "--out", "o", "--batch-size", "4", "--grad-accum", "3"])
    assert "--grad-accum 3" in capsys.readouterr().err


def test_the_held_out_split_is_stratified_and_seeded():
    labels = ["AD"] * 10 + ["NonAD"] * 20
    train_part, held = split_held_out(labels, 0.1, seed=0)
    assert sorted(train_part + held) == list(range(30))
    assert [labels[i] for i in held].count("AD") == 1 and [labels[i] for i in held].count("NonAD") == 2
    assert split_held_out(labels, 0.1, seed=0) == (train_part, held)
    assert split_held_out(labels, 0.1, seed=1)[1] != held
    assert split_held_out(["AD", "AD"], 0.5, seed=0)[0], "each label keeps a training image"
