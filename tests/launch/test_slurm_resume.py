"""The resume helper of the sbatch scripts (`python -m dawn_train.launch.slurm resume-path -- fit ARGS`), without a
cluster: a fresh start, a run that died before its first checkpoint, a run with checkpoints."""
from __future__ import annotations

from dawn_train.launch import slurm

from .conftest import tiny_lfg_config


def test_resume_path_follows_what_the_run_folder_holds(synth_shards, tmp_path, capsys):
    run = tmp_path / "runs dir.v1" / "lfg"
    config = tiny_lfg_config(tmp_path / "lfg.yaml", synth_shards, run)
    argv = ["fit", "-c", str(config)]
    assert slurm.resume_path(argv) is None  # nothing there: a fresh start
    assert slurm.resume_path([*argv, "--ckpt_path", "x.ckpt"]) is None  # the job says itself

    (run / "csv").mkdir(parents=True)
    (run / "csv" / "metrics.csv").write_text("step,train/loss\n0,1.0\n")
    # an earlier start died before its first checkpoint: a fresh fit would refuse the folder, a resume starts over
    assert slurm.main(["resume-path", "--", *argv]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "RESUME=last"

    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"a checkpoint")
    assert slurm.resume_path(argv) == run / "checkpoints" / "last.ckpt"
