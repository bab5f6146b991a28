"""experiments/: configs compose from a base and overlays without copied lines, every documented
composition resolves (`dawn-train fit ... --print_config`, no data or checkpoint needed), one run name
places every directory of a run, and the values shared by data and model are set once."""
from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from dawn_train.launch.config import resolve_fit_config

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"

# Every documented composition: the -c files in order (relative to experiments/), then extra arguments.  A key
# "run+ablation" is an ablation overlay that keeps the run name of its recipe (`make quality` finds its runs by name).
COMPOSITIONS = {
    "lfg-hdtf128": ["base", "lfg/base", "lfg/hdtf128"],
    "lfg-hdtf256": ["base", "lfg/base", "lfg/hdtf256"],
    "pbnet-pose-hdtf": ["base", "pbnet/base", "pbnet/hdtf_pose"],
    "pbnet-blink-hdtf": ["base", "pbnet/base", "pbnet/hdtf_blink"],
    "a2v-hdtf128-stage1": ["base", "a2v/base", "a2v/hdtf128"],
    "a2v-hdtf128-stage2": ["base", "a2v/base", "a2v/hdtf128", "a2v/stage2"],
    "a2v-hdtf256-stage1": ["base", "a2v/base", "a2v/hdtf256"],
    "a2v-hdtf256-stage2": ["base", "a2v/base", "a2v/hdtf256", "a2v/stage2"],
    "lfg-demo": ["base", "demo/base", "demo/lfg"],
    "pbnet-pose-demo": ["base", "demo/base", "demo/pbnet"],
    "pbnet-blink-demo": ["base", "demo/base", "demo/pbnet", "demo/pbnet_blink"],
    "a2v-demo-stage1": ["base", "demo/base", "demo/a2v_stage1"],
    "a2v-demo-stage2": ["base", "demo/base", "demo/a2v_stage1", "demo/a2v_stage2"],
    "lfg-synth": ["base", "demo/base", "demo/lfg", "synth/base", "synth/lfg"],
    "lfg-synth+no_eyes": ["base", "demo/base", "demo/lfg", "synth/base", "synth/lfg", "synth/lfg_no_eyes"],  # QUALITY_LFG
    "pbnet-pose-synth": ["base", "demo/base", "demo/pbnet", "synth/base", "synth/pbnet"],
    "pbnet-blink-synth": ["base", "demo/base", "demo/pbnet", "synth/base", "synth/pbnet", "demo/pbnet_blink"],
    "a2v-synth-stage1": ["base", "demo/base", "demo/a2v_stage1", "synth/base", "synth/a2v_stage1"],
    "a2v-synth-stage2": ["base", "demo/base", "demo/a2v_stage1", "demo/a2v_stage2", "synth/base", "synth/a2v_stage1",
                         "synth/a2v_stage2"],
}
# Strategy presets compose after a stage (the ZeRO-3 ones are overlays of deepspeed_stage_2).
STRATEGIES = {
    "ddp": ["strategies/ddp"],
    "deepspeed_stage_2": ["strategies/deepspeed_stage_2"],
    "deepspeed_stage_3": ["strategies/deepspeed_stage_2", "strategies/deepspeed_stage_3"],
    "deepspeed_stage_3_offload": ["strategies/deepspeed_stage_2", "strategies/deepspeed_stage_3_offload"],
}
NOT_FIT_CONFIGS = {"ablations/window.yaml", "demo/generate.yaml"}  # a sweep file, a `generate --config` file


def argv(parts: list[str]) -> list[str]:
    return [w for part in parts for w in ([part] if part.startswith("--") else ["-c", f"experiments/{part}.yaml"])]


def setting_lines(path: Path) -> set[str]:
    """The `key: value` lines of a YAML file, normalised: no comment, no indent, no list dash; lines
    that only open a mapping (`trainer:`, `init_args:`) and bare list items are left out."""
    lines = set()
    for line in path.read_text().splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        line = line[2:].strip() if line.startswith("- ") else line
        if ": " in line:
            lines.add(line)
    return lines


def test_no_setting_is_repeated_in_more_than_two_files():
    files = defaultdict(list)
    for path in sorted(EXPERIMENTS.rglob("*.yaml")):
        for line in setting_lines(path):
            files[line].append(str(path.relative_to(EXPERIMENTS)))
    # a dataset's location is named by each stage's config that reads it (LFG, A2V-FDM and PBNet read HDTF's 128-px
    # shards): not a training setting that would drift apart between copies
    repeated = {line: where for line, where in files.items() if len(where) > 2 and not line.startswith("shards: ")}
    assert not repeated, f"put these in a base or an overlay that the configs compose: {repeated}"


def test_every_fit_config_is_in_a_documented_composition():
    used = {f"{part}.yaml" for parts in [*COMPOSITIONS.values(), *STRATEGIES.values()] for part in parts
            if not part.startswith("--")}
    found = {str(p.relative_to(EXPERIMENTS)) for p in EXPERIMENTS.rglob("*.yaml")}
    assert found - NOT_FIT_CONFIGS == used, "add the new config to COMPOSITIONS (and document it) or delete it"


def run_dirs(config: dict) -> list[str]:
    loggers = config["trainer"]["logger"]
    return [config["trainer"]["default_root_dir"], config["checkpoint"]["dirpath"],
            *(logger["init_args"]["save_dir"] for logger in loggers)]


@pytest.mark.parametrize("name", COMPOSITIONS)
def test_composition_resolves_and_its_directories_follow_the_run_name(name):
    config = resolve_fit_config(argv(COMPOSITIONS[name]))
    name = name.split("+")[0]
    assert config["run"]["name"] == name
    run_dir = f"{config['run']['root']}/{name}"  # runs/ or the recipe's own root
    assert run_dirs(config) == [run_dir, f"{run_dir}/checkpoints", run_dir, run_dir]
    wandb = config["trainer"]["logger"][0]["init_args"]
    assert wandb["name"] == name and wandb["job_type"] == config["run"]["job_type"]
    assert "${" not in json.dumps(config)  # every interpolation resolved


def test_run_name_and_root_on_the_command_line_move_every_directory():
    config = resolve_fit_config(argv([*COMPOSITIONS["a2v-hdtf128-stage2"], "--run.name=foo", "--run.root=/scratch"]))
    assert run_dirs(config) == ["/scratch/foo", "/scratch/foo/checkpoints", "/scratch/foo", "/scratch/foo"]
    # the stage-1 checkpoint it starts from belongs to the experiment, not to this run
    assert config["model"]["init_args"]["init_from"] == "runs/a2v-hdtf128-stage1/checkpoints/last.ckpt"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_presets_compose_after_a_stage(strategy):
    config = resolve_fit_config(argv([*COMPOSITIONS["a2v-hdtf128-stage1"], *STRATEGIES[strategy]]))
    trainer = config["trainer"]
    assert trainer["strategy"]["class_path"].startswith("dawn_train.launch.strategies.")
    assert trainer["precision"] == "bf16-mixed"  # from the stage config
    assert [c["class_path"].rsplit(".", 1)[1] for c in trainer["callbacks"]] == [
        "LearningRateMonitor", "Throughput", "DataHealth", "ScaleReport"]
    if strategy.startswith("deepspeed_stage_3"):
        assert trainer["strategy"]["init_args"]["stage"] == 3 and trainer["strategy"]["init_args"]["overlap_comm"]
    assert config["data"]["init_args"]["worker_start_method"] == "forkserver"  # no rank forks with its threads running


def test_optimizer_is_injected_from_yaml():
    config = resolve_fit_config(argv([*COMPOSITIONS["pbnet-pose-demo"], "--model.init_args.optimizer=torch.optim.SGD",
                                      "--model.init_args.optimizer.init_args.momentum=0.9"]))
    optimizer = config["model"]["init_args"]["optimizer"]
    assert optimizer["class_path"] == "torch.optim.SGD" and optimizer["init_args"]["momentum"] == 0.9
    assert resolve_fit_config(argv(COMPOSITIONS["lfg-demo"]))["model"]["init_args"]["optimizer"] is None  # official


@pytest.fixture
def fake_shards(tmp_path) -> Path:
    """A shard directory with only a manifest: an 80-d audio feature."""
    from dawn_train.data import schema
    from dawn_train.data.shards import MANIFEST

    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / MANIFEST).write_text(json.dumps({"schema_version": schema.SCHEMA_VERSION,
                                               "feature": {"type": "logmel", "dim": 80}, "splits": {}}))
    return shards


def test_values_shared_by_data_and_model_are_set_once(fake_shards, tmp_path, monkeypatch):
    """The PBNet's dims follow its target and the shards (also in the hyper-parameters a checkpoint
    rebuilds the model from), the A2V reference frame rule its curriculum stage, the A2V-FDM's audio
    size the shards; the stage's injected optimizer gets the stage's lr."""
    import lightning as L
    import torch

    from dawn_train.stages.cli import DawnCLI, derive_model_args

    monkeypatch.setenv("WANDB_MODE", "offline")
    common = [f"--data.init_args.shards={fake_shards}", f"--run.root={tmp_path / 'runs'}"]
    cli = DawnCLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                  run=False, args=argv(COMPOSITIONS["pbnet-blink-demo"]) + common
                  + ["--model.init_args.optimizer=torch.optim.AdamW"], save_config_callback=None)
    assert (cli.model.model.pos_dim, cli.model.model.eye_dim) == (0, 2)
    dims = {k: cli.model.hparams["model"]["init_args"][k] for k in ("pos_dim", "eye_dim", "audio_dim")}
    assert dims == {"pos_dim": 0, "eye_dim": 2, "audio_dim": 80}
    optimizer = cli.model.optimizer(cli.model.model.parameters(), lr=cli.model.hparams.lr)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.param_groups[0]["lr"] == 3e-3  # demo/pbnet.yaml

    for name, reference in (("a2v-demo-stage1", "first"), ("a2v-demo-stage2", "random"),
                            ("a2v-hdtf256-stage2", "random")):
        config = cli.parser.parse_args(argv(COMPOSITIONS[name]) + common)
        assert config.data.init_args.reference == reference
        assert derive_model_args(config) == ["model.init_args.model.init_args.cond_aud: 1024 -> 80"]
        assert config.model.init_args.model.init_args.cond_aud == 80
    assert derive_model_args(cli.parser.parse_args(argv(COMPOSITIONS["lfg-demo"]) + common)) == []


def test_config_files_parse_as_yaml():
    for path in EXPERIMENTS.rglob("*.yaml"):
        assert isinstance(yaml.safe_load(path.read_text()), dict), path


def quality_commands(tmp_path: Path, env: dict[str, str]) -> list[list[str]]:
    """The `dawn-train` command lines experiments/synth/quality.sh runs with `env`, `dawn-train` being a shell function
    that writes down its arguments."""
    import shlex
    import subprocess

    calls = tmp_path / "calls.txt"
    script = (f'dawn-train() {{ printf "%q " "$@" >> {shlex.quote(str(calls))}; echo >> {shlex.quote(str(calls))}; }}\n'
              f"export -f dawn-train\nbash experiments/synth/quality.sh")
    subprocess.run(["bash", "-c", script], cwd=REPO, env={"PATH": "/usr/bin:/bin", **env}, check=True,
                   capture_output=True)
    return [shlex.split(line) for line in calls.read_text().splitlines()]


def test_quality_out_moves_every_run_shard_and_probe_of_the_recipe(tmp_path, monkeypatch):
    """`QUALITY_OUT=DIR make quality`: every `dawn-train fit` of experiments/synth/quality.sh reads its shards and
    probe from DIR and writes its runs there, though the configs name quality_out/ (the script runs here with
    `dawn-train` a shell function that writes down its arguments)."""
    out = tmp_path / "elsewhere dir.d"
    commands = quality_commands(tmp_path, {"QUALITY_OUT": str(out), "QUALITY_RESULTS": str(tmp_path / "results")})
    fits = [args[1:] for args in commands if args[0] == "fit"]
    assert len(fits) == 5  # LFG, PBNet pose and blink, A2V-FDM stages 1 and 2
    monkeypatch.chdir(REPO)
    for args in fits:
        config = resolve_fit_config(args)
        assert config["run"]["root"] == f"{out}/runs"
        assert config["data"]["init_args"]["shards"] == f"{out}/shards"
        probe = config["model"]["init_args"].get("probe")
        assert probe in (None, f"{out}/probe.pt"), probe
        assert '"quality_out/' not in json.dumps(config), args  # no path left relative to quality_out/


def test_quality_lfg_adds_an_ablation_config_to_the_lfg_run_only(tmp_path, monkeypatch):
    """`QUALITY_LFG=FILE make quality` gives FILE after synth/lfg.yaml to the LFG's fit, to no other, and the
    results file names the command that reproduces it (a config path with spaces and dots, as users have)."""
    import shutil
    import subprocess

    ablation = tmp_path / "my ablations.d" / "lfg no eyes.yaml"
    ablation.parent.mkdir()
    shutil.copy(EXPERIMENTS / "synth" / "lfg_no_eyes.yaml", ablation)
    out = tmp_path / "out"
    commands = quality_commands(tmp_path, {"QUALITY_OUT": str(out), "QUALITY_LFG": str(ablation)})
    fits = [args[1:] for args in commands if args[0] == "fit"]
    assert [str(ablation) in args for args in fits] == [True, False, False, False, False]
    monkeypatch.chdir(REPO)
    recipe = resolve_fit_config(argv(COMPOSITIONS["lfg-synth"]))  # the recipe's LFG has the eye terms on ...
    lfg = recipe["model"]["init_args"]
    assert (lfg["eye_weight"], lfg["eye_region_weight"], lfg["eye_occlusion_weight"]) == (10.0, 10.0, 1.0)
    assert (lfg["eye_occlusion_power"], lfg["eye_occlusion_margin"]) == (3.0, 0.1)
    assert lfg["model"]["init_args"]["region_predictor_params"]["scale_factor"] == 0.5
    assert recipe["data"]["init_args"]["blink_pairs"] == 0.25
    config = resolve_fit_config(fits[0])  # ... and the ablation turns every one of them off
    lfg = config["model"]["init_args"]
    assert (lfg["eye_weight"], lfg["eye_region_weight"], lfg["eye_occlusion_weight"]) == (0.0, 0.0, 0.0)
    assert (lfg["eye_occlusion_power"], lfg["eye_occlusion_margin"]) == (1.0, 0.0)
    assert "scale_factor" not in lfg["model"]["init_args"]["region_predictor_params"]  # the model's default, a quarter
    assert config["data"]["init_args"]["blink_pairs"] == 0.0
    assert config["trainer"]["max_steps"] == recipe["trainer"]["max_steps"]  # the rest of the recipe unchanged
    report = next(args for args in commands if args[0] == "quality-report")
    assert report[report.index("--command") + 1] == f"QUALITY_LFG={ablation} make quality"
    # a missing file is named before the earlier run's folder is emptied
    (out / "runs").mkdir(parents=True)
    missing = subprocess.run(["bash", "experiments/synth/quality.sh"], cwd=REPO, capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin", "QUALITY_OUT": str(out), "QUALITY_LFG": f"{ablation}x"})
    assert missing.returncode == 2 and f"QUALITY_LFG={ablation}x: no such file" in missing.stderr
    assert (out / "runs").is_dir()


def test_every_dataset_path_of_a_config_is_written_by_its_recipe():
    """A config that reads `datasets/<name>/<shards>` names a folder its recipe (datasets/<name>/README.md) writes:
    experiments/pbnet/base.yaml read `datasets/hdtf/shards`, which the HDTF recipe never wrote."""
    used = set()
    for path in EXPERIMENTS.rglob("*.yaml"):
        used |= {(m.group(1), m.group(2), path.name) for m in re.finditer(r"datasets/(\w+)/(\w+)", path.read_text())}
    assert used
    for dataset, folder, config in sorted(used):
        recipe = REPO / "datasets" / dataset / "README.md"
        assert recipe.is_file(), f"{config}: datasets/{dataset} has no recipe"
        written = rf"--out datasets/{dataset}/{folder}\b|`{folder}`"  # a command's output, or named in the text
        assert re.search(written, recipe.read_text()), f"{config}: no command of {recipe} writes datasets/{dataset}/{folder}"
