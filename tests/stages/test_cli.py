"""`dawn-train fit` through DawnCLI: config errors in one line naming the YAML file, one folder per run (a fresh
fit refuses a folder that holds a run, a failed start leaves nothing), where a finished fit put its run, and the
step progress bar."""
from __future__ import annotations

import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from jsonargparse import Namespace

from dawn_train.cli import main
from dawn_train.stages.progress import StepProgressBar
from dawn_train.stages.run_folder import check_fresh_start, run_files

REPO = Path(__file__).resolve().parents[2]
DEMO_LFG = [w for name in ("base", "demo/base", "demo/lfg") for w in ("-c", str(REPO / "experiments" / f"{name}.yaml"))]

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_fit(root: Path, shards: Path, *extra: str) -> list[str]:
    """The demo LFG for 2 steps, its run at `root/lfg-demo`."""
    return ["fit", *DEMO_LFG, f"--run.root={root}", f"--data.init_args.shards={shards}", "--trainer.max_steps=2",
            "--checkpoint.every_n_train_steps=2", "--trainer.limit_val_batches=0", "--data.init_args.num_workers=0",
            "--model.init_args.image_every_n_steps=1000", "--trainer.enable_progress_bar=false", *extra]


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("dawn-train: error:")]


def test_config_errors_name_the_key_and_the_yaml_file_in_one_line(tmp_path, capsys):
    bad = tmp_path / "my overrides.v1.yaml"
    bad.write_text("model:\n  init_args:\n    model:\n      init_args:\n        num_regionz: 3\n")
    assert main(["fit", *DEMO_LFG, "-c", str(bad)]) == 2  # a usage error
    err = capsys.readouterr().err
    assert "Traceback" not in err and "usage:" not in err
    (line,) = error_lines(err)
    assert "model.init_args.model.init_args.num_regionz: unknown key" in line and str(bad) in line

    bad.write_text("trainer:\n  max_steps: many\n")
    assert main(["fit", *DEMO_LFG, "-c", str(bad)]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "trainer.max_steps: expected int, got 'many'" in line and str(bad) in line
    assert main(["fit", *DEMO_LFG, "--model.init_args.lr=fast"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "model.init_args.lr: expected float" in line and "on the command line" in line


def test_a_fresh_fit_refuses_a_folder_that_holds_a_run(synth_shards, tmp_path, capsys):
    root = tmp_path / "runs dir.v1"
    assert main(tiny_fit(root, synth_shards)) == 0
    run = root / "lfg-demo"
    err = capsys.readouterr().err
    last = run / "checkpoints" / "last.ckpt"
    assert f"run folder: {run}" in err and f"last checkpoint: {last}" in err
    assert "W&B run lfg-demo-" in err and "wandb sync" in err  # offline: the command that uploads it

    assert main(tiny_fit(root, synth_shards)) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert f"{run} already holds a run" in line and "--ckpt_path last" in line and "--run.name" in line
    assert last.is_file() and torch.load(last, weights_only=False)["global_step"] == 2  # untouched

    # a resume is allowed into it; a new name is a new folder
    resume = Namespace(trainer=Namespace(default_root_dir=str(run)), checkpoint=Namespace(dirpath=str(last.parent)),
                       ckpt_path="last")
    assert check_fresh_start(resume) is None
    assert check_fresh_start(Namespace(trainer=Namespace(default_root_dir=str(root / "try2")), ckpt_path=None))


def test_a_fit_that_fails_before_its_first_step_leaves_no_run(synth_shards, tmp_path, capsys):
    root = tmp_path / "runs dir.v1"
    # a resume from a checkpoint that is not there: refused before anything is built (Lightning's own check comes
    # after the loggers have started a run)
    missing_ckpt = tmp_path / "old runs.v0" / "no such.ckpt"
    assert main(tiny_fit(root, synth_shards, f"--ckpt_path={missing_ckpt}")) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert f"--ckpt_path {missing_ckpt}: no such checkpoint" in line and "--ckpt_path last" in line
    assert not root.exists()

    # fails while the classes are built (the W&B logger already wrote into the run folder)
    missing = tmp_path / "weights" / "vgg19.pth"
    assert main(tiny_fit(root, synth_shards, "--model.init_args.perceptual=vgg19",
                         f"--model.init_args.vgg19_weights={missing}")) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert f"no VGG19 weights at {missing}" in line and "model.init_args.vgg19_weights" in line
    assert not (root / "lfg-demo").exists()

    # fails in the first batch, once the run wrote its config, CSV hyper-parameters and W&B files
    broken = tmp_path / "broken shards.v1"
    shutil.copytree(synth_shards, broken)
    for tar in sorted(broken.glob("train-*.tar"))[:4]:
        tar.write_bytes(tar.read_bytes()[:3000])
    assert main(tiny_fit(root, broken)) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert "max_skip_fraction=0.1" in line and "train-000000.tar" in line
    assert not (root / "lfg-demo").exists() and run_files(root) == []
    assert main(["report", str(root / "lfg-demo"), "--out", str(tmp_path / "report")]) == 1  # nothing to mistake


class Steps(L.LightningModule):
    """A linear model on random numbers: the smallest real training loop."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).pow(2).mean()

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.randn(12, 2), batch_size=4)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class SeenBar(StepProgressBar):
    """Keeps what the train bar showed when training ended (Lightning drops the bar after)."""

    def on_train_end(self, trainer, pl_module):
        task = self.progress.tasks[self.train_progress_bar_id]
        self.seen = (task.description, task.completed, task.total)
        super().on_train_end(trainer, pl_module)


@pytest.mark.parametrize("max_steps, max_epochs, shown", [(7, -1, ("step", 7, 7)), (-1, 2, ("Epoch 1/1", 3, 3))])
def test_progress_bar_counts_steps_against_max_steps(tmp_path, max_steps, max_epochs, shown):
    bar = SeenBar()
    trainer = L.Trainer(max_steps=max_steps, max_epochs=max_epochs, callbacks=[bar], logger=False,
                        enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(Steps())
    description, completed, total = bar.seen
    assert shown[0] in description and "-2" not in description and (completed, total) == shown[1:]
