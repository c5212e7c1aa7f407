import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from smelt.model import build_model
from smelt.objectives import CausalLM
from smelt.train.checkpoint import latest_checkpoint, list_checkpoints, load_pretrained
from smelt.train.config import OptimConfig
from smelt.train.loop import Trainer, TrainingDiverged
from smelt.train.metrics import read_metrics
from smelt.train.optim import lr_at
from smelt.train.pretrain import SyntheticTokens, load_run_config

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model.preset", "debug", "--model.n_layers", "2", "--model.d_model", "64", "--model.n_heads", "2",
        "--model.n_kv_heads", "1", "--model.vocab_size", "512", "--data.batch_size", "4", "--data.seq_len", "32",
        "--data.synthetic", "true", "--train.progress", "false", "--optim.warmup_steps", "5"]


def tiny_cfg(tmp_path, *extra):
    return load_run_config(None, TINY + ["--train.out_dir", str(tmp_path / "run"), *extra])


def run_cli(args, env=None, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "smelt", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, **kw)


def test_lr_schedules_closed_form():
    cfg = OptimConfig(lr=1.0, min_lr_ratio=0.1, warmup_steps=10, schedule="cosine")
    assert lr_at(0, 110, cfg) == pytest.approx(0.1)
    assert lr_at(9, 110, cfg) == pytest.approx(1.0)
    assert lr_at(59, 110, cfg) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(109, 110, cfg) == pytest.approx(0.1)
    lin = OptimConfig(lr=1.0, min_lr_ratio=0.0, warmup_steps=0, schedule="linear")
    assert lr_at(49, 100, lin) == pytest.approx(0.5)
    wsd = OptimConfig(lr=1.0, min_lr_ratio=0.0, warmup_steps=0, schedule="wsd", decay_frac=0.2)
    assert lr_at(79, 100, wsd) == 1.0 and lr_at(89, 100, wsd) == pytest.approx(0.5)
    assert lr_at(99, 100, wsd) == pytest.approx(0.0)


def _one_step_params(tmp_path, name, batch_size, accum):
    cfg = tiny_cfg(tmp_path / name, "--data.batch_size", str(batch_size), "--train.grad_accum", str(accum),
                   "--train.steps", "1", "--train.ckpt_every", "0", "--optim.grad_clip", "0")
    model = build_model(cfg.model, seed=0)

    class Fixed:  # the same 8 rows, served as 1×8 or 2×4
        def __init__(self):
            self.rows = torch.randint(0, 512, (8, 33), generator=torch.Generator().manual_seed(3))
            self.i = 0

        def next_batch(self):
            out = self.rows[self.i:self.i + batch_size]
            self.i += batch_size
            return out

        def state_dict(self):
            return {"i": self.i}

        def load_state_dict(self, s):
            self.i = s["i"]

    out = Trainer(cfg, model, CausalLM(), Fixed()).fit()
    return out["loss"], [p.detach().clone() for p in model.parameters()]


def test_grad_accumulation_equals_large_batch(tmp_path):
    loss_a, params_a = _one_step_params(tmp_path, "a", 8, 1)
    loss_b, params_b = _one_step_params(tmp_path, "b", 4, 2)
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    for p, q in zip(params_a, params_b):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


class NaNAt(CausalLM):
    def __init__(self, bad_steps):
        self.bad_steps, self.calls = set(bad_steps), 0

    def loss(self, model, batch):
        self.calls += 1
        loss, m = super().loss(model, batch)
        return (loss * float("nan") if self.calls in self.bad_steps else loss), m


def test_nan_loss_skips_step_and_run_survives(tmp_path):
    cfg = tiny_cfg(tmp_path, "--train.steps", "6", "--train.log_every", "1", "--train.ckpt_every", "0")
    model = build_model(cfg.model, seed=0)
    snapshots = []

    class Spy(NaNAt):
        def loss(self, model, batch):
            snapshots.append(model.embed.weight.detach().clone())
            return super().loss(model, batch)

    out = Trainer(cfg, model, Spy({3}), SyntheticTokens(512, 4, 32)).fit()
    assert out["step"] == 6 and out["skipped_total"] == 1
    torch.testing.assert_close(snapshots[2], snapshots[3], rtol=0, atol=0)  # the NaN step changed nothing
    assert not torch.equal(snapshots[3], snapshots[4])
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows if r.get("skipped")] == [3]
    assert all(math.isfinite(r["loss"]) for r in rows if not r.get("skipped"))


def test_consecutive_nans_stop_with_clear_error(tmp_path):
    cfg = tiny_cfg(tmp_path, "--train.steps", "10", "--train.max_bad_steps", "3", "--train.ckpt_every", "0")
    with pytest.raises(TrainingDiverged, match="3 consecutive non-finite losses"):
        Trainer(cfg, build_model(cfg.model), NaNAt({2, 3, 4}), SyntheticTokens(512, 4, 32)).fit()


def _losses(run_dir):
    return {r["step"]: r["loss"] for r in read_metrics(run_dir) if "loss" in r}


def test_resume_after_sigkill_is_exact(tmp_path):
    common = TINY + ["--train.steps", "60", "--train.log_every", "1", "--train.ckpt_every", "10"]
    ref = run_cli(["pretrain", *common, "--train.out_dir", str(tmp_path / "ref")], timeout=300)
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "smelt", "pretrain", *common, "--train.out_dir", str(run)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run / "checkpoints" / "step-20").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before it could be killed"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = max(_losses(run))
    assert killed_at < 60, "the kill came too late to test anything"
    resumed = run_cli(["pretrain", *common, "--train.out_dir", str(run)], timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr
    ref_losses, got = _losses(tmp_path / "ref"), _losses(run)
    assert sorted(got) == list(range(1, 61))
    for step in range(1, 61):
        assert got[step] == ref_losses[step], f"step {step}: {got[step]} != {ref_losses[step]}"


def test_kill_during_checkpoint_write_keeps_previous(tmp_path):
    run = tmp_path / "run"
    args = ["pretrain", *TINY, "--train.steps", "30", "--train.ckpt_every", "10", "--train.out_dir", str(run)]
    crashed = run_cli(args, env={"SMELT_TEST_CRASH_IN_CHECKPOINT": "20"}, timeout=300)
    assert crashed.returncode == -signal.SIGKILL
    assert (run / "checkpoints" / ".tmp-step-20" / "model.safetensors").exists()  # the half-written one
    assert [p.name for p in list_checkpoints(run)] == ["step-10"]
    assert latest_checkpoint(run).name == "step-10"
    model, _ = load_pretrained(run)
    assert model(torch.randint(0, 512, (1, 8))).isfinite().all()
    done = run_cli(args, timeout=300)
    assert done.returncode == 0, done.stderr
    assert latest_checkpoint(run).name == "step-30"
    assert not list((run / "checkpoints").glob(".tmp-*"))


def test_cli_config_error_names_field(tmp_path):
    r = run_cli(["pretrain", *TINY, "--optim.lr", "-1", "--train.out_dir", str(tmp_path / "x")], timeout=120)
    assert r.returncode == 2 and "optim.lr" in r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nstepz = 3\n")
    r = run_cli(["pretrain", str(bad)], timeout=120)
    assert r.returncode == 2 and "bad.toml" in r.stderr and "train.stepz" in r.stderr


def test_run_folder_records_config_and_seed(tmp_path):
    cfg = tiny_cfg(tmp_path, "--train.steps", "2", "--train.seed", "7")
    Trainer(cfg, build_model(cfg.model), CausalLM(), SyntheticTokens(512, 4, 32)).fit()
    run = tmp_path / "run"
    again = load_run_config(run / "config.toml")
    assert again == cfg
    info = json.loads((run / "run.json").read_text())
    assert info["seed"] == 7 and info["data_order"]["seed"] == 7


@pytest.mark.parametrize("name", ["adam", "sgd", "adafactor"])
def test_other_optimizers_reduce_loss(tmp_path, name):
    lr = {"adam": "3e-3", "sgd": "0.3", "adafactor": "3e-2"}[name]
    cfg = tiny_cfg(tmp_path, "--optim.name", name, "--optim.lr", lr, "--train.steps", "30", "--train.log_every", "1",
                   "--train.ckpt_every", "0", "--optim.warmup_steps", "0")

    class Repeat:  # one fixed batch: any working optimizer must fit it
        batch = torch.randint(0, 512, (4, 33), generator=torch.Generator().manual_seed(0))

        def next_batch(self):
            return self.batch

        def state_dict(self):
            return {}

        def load_state_dict(self, s):
            pass

    Trainer(cfg, build_model(cfg.model), CausalLM(), Repeat()).fit()
    losses = [r["loss"] for r in read_metrics(tmp_path / "run")]
    assert losses[-1] < losses[0] - 0.5, losses


def test_activation_checkpointing_gives_same_training(tmp_path):
    a = tiny_cfg(tmp_path / "a", "--train.steps", "3", "--train.log_every", "1", "--train.ckpt_every", "0")
    b = tiny_cfg(tmp_path / "b", "--train.steps", "3", "--train.log_every", "1", "--train.ckpt_every", "0",
                 "--train.activation_checkpointing", "true")
    out_a = Trainer(a, ma := build_model(a.model), CausalLM(), SyntheticTokens(512, 4, 32)).fit()
    out_b = Trainer(b, mb := build_model(b.model), CausalLM(), SyntheticTokens(512, 4, 32)).fit()
    assert out_a["loss"] == pytest.approx(out_b["loss"], rel=1e-6)
    assert set(ma.state_dict()) == set(mb.state_dict())  # parameter names unchanged by the wrapper
    for (n, p), q in zip(ma.named_parameters(), mb.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5, msg=n)


def test_early_stopping_and_keep_last(tmp_path):
    cfg = tiny_cfg(tmp_path, "--train.steps", "50", "--train.eval_every", "2", "--train.early_stop_patience", "2",
                   "--train.ckpt_every", "2", "--train.keep_last", "2")
    calls = []

    def worsening(model):  # validation that never improves after the first evaluation
        calls.append(1)
        return {"val_loss": float(len(calls))}

    out = Trainer(cfg, build_model(cfg.model), CausalLM(), SyntheticTokens(512, 4, 32), evaluate=worsening).fit()
    assert out["step"] == 6 and out["stop_reason"].startswith("early stop")
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-4", "step-6"]
    assert out["best_val_loss"] == 1.0


def test_fp16_autocast_with_grad_scaler_tracks_fp32(tmp_path):
    outs = {}
    for prec in ("fp32", "fp16"):
        cfg = tiny_cfg(tmp_path / prec, "--train.steps", "4", "--train.log_every", "1", "--train.ckpt_every", "0",
                       "--train.precision", prec)
        outs[prec] = Trainer(cfg, build_model(cfg.model), CausalLM(), SyntheticTokens(512, 4, 32)).fit()
    assert outs["fp16"]["skipped_total"] == 0
    assert outs["fp16"]["loss"] == pytest.approx(outs["fp32"]["loss"], abs=2e-2)
