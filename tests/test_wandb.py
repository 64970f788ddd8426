"""A run's W&B logger, offline (no training): where it writes, and the run id a resume keeps."""

import json
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import terabyte_file, wandb_exit_code
from lotterynet.cli import main
from lotterynet.config import make_config
from lotterynet.loggers import (
    WANDB_ID_FILE,
    close_wandb_run,
    make_loggers,
    read_wandb_records,
    read_wandb_summary,
    reporting_wandb_failure,
    wandb_sync,
)


def wandb_logger(run_dir: Path, resumed=None):
    """The W&B logger of a ``--wandb`` run in ``run_dir`` (of the ``resumed`` checkpoint)."""
    *_, logger = make_loggers(run_dir, {"wandb": True}, resumed)
    return logger


def test_wandb_files_go_into_wandb_dir_where_it_is_set(tmp_path, monkeypatch):
    """``$WANDB_DIR`` is where W&B's folder goes, as W&B documents it (the run's W&B files
    went into the run's folder whatever it said); without it, into the run's folder. The run
    id stays in the run's folder: a resume continues the same W&B run."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    run_dir = tmp_path / "run"
    first = wandb_logger(run_dir)
    written = Path(close_wandb_run(first.experiment))
    assert written.parent == tmp_path / "wandb-dir" / "wandb" and not (run_dir / "wandb").exists()
    assert (run_dir / WANDB_ID_FILE).is_file()
    resumed = wandb_logger(run_dir, (run_dir / "checkpoints" / "last.ckpt",
                                     {"epoch": 0, "global_step": 1}))
    assert resumed.version == first.version
    monkeypatch.delenv("WANDB_DIR")
    assert Path(wandb_logger(tmp_path / "other").save_dir) == tmp_path / "other"


def test_a_copied_run_folder_resumed_logs_into_a_wandb_run_of_its_own_and_says_what_to_sync(
        tmp_path, monkeypatch, capsys):
    """``cp -r runs/a runs/b`` then ``--resume runs/b/checkpoints/last.ckpt --wandb``: b's id
    file is a's, naming a, which still holds that id, so b's resume is a W&B run of its own
    (two runs would log into one otherwise) and says so in one line, which it did not; a's own
    resume continues a's run, saying nothing. The line names the folders to sync, b's own: the
    offline folders copied into ``runs/b/wandb`` are a's (``wandb sync
    runs/b/wandb/offline-run-*`` uploaded b's partial copy of a into a's W&B run)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in ("WANDB_DIR", "WANDB_RUN_ID", "WANDB_SWEEP_ID"):
        monkeypatch.delenv(name, raising=False)
    first_dir, copy_dir = (tmp_path / "runs" / "a").resolve(), (tmp_path / "runs" / "b").resolve()
    first = wandb_logger(first_dir)
    first_written = Path(close_wandb_run(first.experiment))
    shutil.copytree(first_dir, copy_dir)
    capsys.readouterr()
    copy = wandb_logger(copy_dir, (copy_dir / "checkpoints" / "last.ckpt",
                                   {"epoch": 0, "global_step": 1}))
    copy_written = Path(close_wandb_run(copy.experiment))
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("W&B:")]
    assert said == [f"W&B: {str(copy_dir)!r} is a copy of {str(first_dir)!r}, which keeps its "
                    f"W&B run {first.version}: it logs into a W&B run of its own, "
                    f"{copy.version} (the *-{first.version} folders copied with it are that "
                    f"run's: sync its own, `wandb sync {copy_dir}/wandb/*-{copy.version}`)"]
    assert (copy_dir / "wandb" / first_written.name).is_dir()
    assert copy.version != first.version
    assert first_written.parent == first_dir / "wandb" and first_written.name.endswith(
        f"-{first.version}")
    assert copy_written.parent == copy_dir / "wandb" and copy_written.name.endswith(
        f"-{copy.version}")
    resumed = wandb_logger(first_dir, (first_dir / "checkpoints" / "last.ckpt",
                                       {"epoch": 0, "global_step": 1}))
    assert resumed.version == first.version and "W&B:" not in capsys.readouterr().out


#: A W&B server's API key as ``wandb login`` stores it (a host's netrc entry).
NETRC_ENTRY = "machine {}\n  login user\n  password " + "k" * 40 + "\n"


@pytest.mark.parametrize("files, env, mode", [
    ({}, {"WANDB_API_KEY": "k" * 40}, "online"),
    ({}, {}, "offline"),
    # wandb login's entry for wandb's own server, in a ~/.netrc others may read
    ({".netrc": None}, {}, "online"),
    ({"keys": "api.wandb.ai"}, {"NETRC": "keys"}, "online"),
    ({".netrc": "wandb.example.com:8443"}, {"WANDB_BASE_URL": "https://wandb.example.com:8443"},
     "online"),
    ({".netrc": "wandb.example.com",  # (wandb login --host writes both)
      ".config/wandb/settings": "[default]\nbase_url = https://wandb.example.com\n"}, {}, "online"),
    ({".netrc": "api.wandb.ai"}, {"WANDB_BASE_URL": "https://wandb.example.com"}, "offline"),
    # the workspace's settings file (the working folder's wandb/) wins over the global one
    ({".netrc": "wandb.example.com",
      ".config/wandb/settings": "[default]\nbase_url = https://other.example.com\n",
      "wandb/settings": "[default]\nbase_url = https://wandb.example.com\n"}, {}, "online"),
    ({}, {"WANDB_IDENTITY_TOKEN_FILE": "token.jwt"}, "online"),
    ({".config/wandb/settings": f"[default]\napi_key = {'k' * 40}\n"}, {}, "online"),
    ({"wandb/settings": f"[default]\napi_key = {'k' * 40}\n"}, {}, "online"),
    # `wandb offline` / `wandb disabled` in the working folder, over a key and a global mode
    ({".netrc": None, ".config/wandb/settings": "[default]\nmode = disabled\n",
      "wandb/settings": "[default]\nmode = offline\n"}, {}, "offline"),
    ({".config/wandb/settings": "[default]\nmode = disabled\n"}, {"WANDB_API_KEY": "k" * 40},
     "disabled"),
    ({"wandb/settings": "[default]\nmode = offline\n"}, {"WANDB_MODE": "online"}, "online"),
    # a value wandb's Settings rejects, in either file, drops every file's settings
    ({".netrc": None, "wandb/settings": "[default]\nmode = bogus\n"}, {}, "online"),
    ({".netrc": None, ".config/wandb/settings": "[default]\nconsole = bogus\n",
      "wandb/settings": "[default]\nmode = offline\n"}, {}, "online"),
    ({".netrc": "wandb.example.com",
      ".config/wandb/settings": "[default]\nbase_url = https://wandb.example.com\n",
      "wandb/settings": "[default]\nbogus_key = 1\n"}, {}, "offline"),
    ({".config/wandb/settings": f"[default]\napi_key = {'k' * 40}\nconsole = bogus\n"}, {},
     "offline"),
], ids=["env-key", "no-key", "wandb-login", "netrc-env", "base-url-env", "settings-base-url",
        "another-servers-key", "workspace-base-url", "identity-token-file", "settings-api-key",
        "workspace-api-key", "workspace-mode", "settings-mode", "env-mode-over-settings",
        "bad-mode-drops-the-file", "bad-global-value-drops-the-workspace-mode",
        "unknown-key-drops-the-global-base-url", "bad-value-drops-the-api-key"])
def test_a_wandb_run_is_online_where_wandb_finds_an_api_key(tmp_path, monkeypatch, files, env,
                                                            mode):
    """Without ``$WANDB_MODE`` nor a ``mode`` in W&B's settings files a run is online where
    wandb finds an API key for its server, as README says: it was offline unless
    ``$WANDB_API_KEY`` or ``~/.netrc`` held one for api.wandb.ai, read as Python reads
    ``~/.netrc`` (none in a file others may read), while wandb reads ``$NETRC``'s file, a
    self-hosted server's entry (``$WANDB_BASE_URL``, or the ``base_url`` of its settings
    files) and, in wandb 0.31, its default server's; ``$WANDB_IDENTITY_TOKEN_FILE`` and a
    settings file's ``api_key`` too. The mode that ``wandb offline`` (``disabled``) writes
    into the working folder's ``wandb/settings`` was overridden by lotterynet's own (online,
    with a key): wandb's order holds, ``$WANDB_MODE``, then the workspace's settings file,
    then the global one. Where the files hold a value wandb's settings reject (``mode =
    bogus``, ``console = bogus``, a key it does not know) wandb prints the error and drops
    every file's settings: lotterynet read the others (and refused the bad mode), so its mode
    and server were not wandb's."""
    import wandb

    from lotterynet.config_checks import wandb_mode

    default = urlsplit(wandb.Settings().base_url).netloc
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_CONFIG_DIR", "NETRC",
                 "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, str(tmp_path / value) if name in ("NETRC",
                           "WANDB_IDENTITY_TOKEN_FILE") else value)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        is_netrc = not name.endswith("settings")
        (tmp_path / name).write_text(NETRC_ENTRY.format(text or default) if is_netrc else text)
        (tmp_path / name).chmod(0o644)
    assert wandb_mode() == mode


def test_a_server_mode_without_a_key_from_a_settings_file_is_refused_naming_the_file(
        tmp_path, monkeypatch):
    """A server mode without an API key (what ``wandb enabled`` writes), set in the working
    folder's W&B settings file, is refused as ``$WANDB_MODE``'s is, naming the file it came
    from (not ``$WANDB_MODE``, which is unset). (A mode wandb refuses there makes wandb drop
    the files' settings: test_a_wandb_run_is_online_where_wandb_finds_an_api_key.)"""
    from lotterynet.config_checks import require_wandb
    from lotterynet.errors import ConfigError

    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wandb").mkdir()
    (tmp_path / "wandb" / "settings").write_text("[default]\nmode = online\n")
    with pytest.raises(ConfigError) as refused:
        require_wandb()
    assert str(refused.value) == (
        f"the mode in W&B's settings file {str(tmp_path / 'wandb' / 'settings')!r} is 'online' "
        f"but no W&B API key is configured: run `wandb login` (or set $WANDB_API_KEY), or log "
        f"offline (WANDB_MODE=offline, or `wandb offline` in this folder) and `wandb sync` later")


@pytest.mark.parametrize("mode, refused", [("online", True), ("shared", True),
                                            ("offline", False)])
def test_an_api_key_and_an_identity_token_file_both_set_are_refused_where_wandb_logs_in(
        tmp_path, monkeypatch, mode, refused):
    """wandb 0.31 refuses to log in where both ``$WANDB_API_KEY`` and
    ``$WANDB_IDENTITY_TOKEN_FILE`` are set ("Both WANDB_API_KEY and WANDB_IDENTITY_TOKEN_FILE
    are set, which is not allowed.", at ``wandb.init``, once the run's folder was written): a
    run that would log in is refused at once, in one line; an offline run does not log in."""
    from lotterynet.config_checks import require_wandb
    from lotterynet.errors import ConfigError

    monkeypatch.setenv("WANDB_MODE", mode)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_IDENTITY_TOKEN_FILE", str(tmp_path / "token.jwt"))
    if not refused:
        require_wandb()
        return
    with pytest.raises(ConfigError, match=r"^\$WANDB_API_KEY and \$WANDB_IDENTITY_TOKEN_FILE are "
                       r"both set, which W&B refuses as it logs in: unset one of them$"):
        require_wandb()


def test_a_new_wandb_dir_is_made_before_wandb_starts(tmp_path, monkeypatch, capfd):
    """A ``$WANDB_DIR`` that did not exist yet was made by W&B, after its warning "git root
    ... does not exist": it is made first."""
    from wandb.errors import term

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "new" / "wandb-dir"))
    monkeypatch.setattr(term, "_printed_messages", set())  # (W&B warns once per process)
    written = close_wandb_run(wandb_logger(tmp_path / "run").experiment)
    assert Path(written).parent == tmp_path / "new" / "wandb-dir" / "wandb"
    assert "does not exist" not in capfd.readouterr().err


def test_a_wandb_run_starts_without_the_anonymous_setting_warning(tmp_path, monkeypatch, capfd):
    """Lightning gives ``wandb.init`` its ``anonymous`` setting, which W&B no longer reads and
    warns about at every run's start (in a sweep: every cell's); W&B's own lines stay."""
    from wandb.errors import term

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(term, "_printed_messages", set())  # (W&B warns once per process)
    close_wandb_run(wandb_logger(tmp_path / "run").experiment)
    printed = capfd.readouterr().err
    assert "Tracking run with wandb" in printed and "anonymous" not in printed


def test_a_wandb_agents_run_starts_without_wandbs_warnings_that_it_ignores_its_settings(
        tmp_path, monkeypatch, capfd):
    """Under a W&B sweep agent (``$WANDB_SWEEP_ID``) W&B takes a run's project, entity and id
    from the agent, and warned at every cell's start "Ignoring project 'lotterynet' when
    running a sweep." and "Ignoring run_id 'agent1' ..." (as if the cell's project were lost):
    they are not given to it. The run is the agent's id, as before."""
    import wandb
    from wandb.errors import term

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep1")
    monkeypatch.setenv("WANDB_RUN_ID", "agent1")
    monkeypatch.setattr(term, "_printed_messages", set())  # (W&B warns once per process)
    wandb.teardown()  # (W&B reads the agent's variables as its session starts)
    try:
        run = wandb_logger(tmp_path / "cell").experiment
        run_id = run.id
        close_wandb_run(run)
    finally:
        wandb.teardown()  # (the next tests' runs are no agent's)
    printed = capfd.readouterr()
    assert run_id == "agent1" and "Tracking run with wandb" in printed.err
    assert "Ignoring" not in printed.out + printed.err


@pytest.mark.parametrize("name, value, reason", [
    ("WANDB_PROJECT", "a/b", "Invalid project name 'a/b'"),
    ("WANDB_RUN_ID", "a/b", "Run ID cannot contain the characters"),
    ("WANDB_CONSOLE", "bogus", "Input should be 'auto', 'off', 'wrap'"),
])
def test_a_wandb_setting_from_the_environment_that_wandb_refuses_is_refused_first(
        name, value, reason, tmp_path, data_dir, monkeypatch, capsys):
    """A ``$WANDB_*`` value that ``wandb.init`` refuses stopped the run with W&B's traceback
    (exit 1) once its model was built, leaving its first files in ``--out``: it is refused as
    a flag is, in one line naming the variable, its value and W&B's reason, before anything is
    written; so is a sweep."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv(name, value)
    out = tmp_path / "run"
    tiny = ["--arch", "fc2", "--limit-train", "100", "--val-size", "100", "--wandb",
            "--data-dir", str(data_dir)]
    for argv in ([*tiny, "--epochs", "1", "--out", str(out)],
                 [*tiny, "--sweep-variants", "dense", "--sweep-sparsities", "0.5",
                  "--sweep-epochs", "1", "--sweep-out", str(out)]):
        assert main(argv) == 2
        printed, err = capsys.readouterr()
        assert printed == "" and err.count("\n") == 1, err
        assert f"${name} is {value!r}, which W&B refuses: {reason}" in err
        assert not out.exists()


def run_config(run_dir: Path) -> dict:
    """The config of the offline W&B run whose files are in ``run_dir``, as its record log
    holds it (its run record, then any later config record)."""
    config = {}
    for record in read_wandb_records(next(run_dir.glob("run-*.wandb"))):
        kind = record.WhichOneof("record_type")
        items = record.run.config.update if kind == "run" else \
            record.config.update if kind == "config" else []
        config.update({item.key: json.loads(item.value_json) for item in items})
    return config


def a_figure(path: Path) -> Path:
    """A small PNG at ``path`` (a sweep's figure, for its summary run to log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    plt.plot([1, 2])
    plt.savefig(path)
    plt.close("all")
    return path


def test_the_sweep_summary_runs_config_is_the_sweeps_grid(tmp_path, monkeypatch):
    """The sweep's summary run (job type sweep-summary) had an empty W&B config: it holds the
    sweep's resolved grid, as sweep.json does, its base as a run's config shows it (without
    where files go nor how it is logged)."""
    from lotterynet import sweep_table as table_module
    from lotterynet.sweep_grid import Sweep

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    base = {"arch": "fc2", "wandb": True, "wandb_group": "g", "data_dir": "/data"}
    grid = Sweep(base, [{"structure": "subsetsum"}, {"structure": "dense"}], [0.5, 0.9], [1, 2],
                 [0, 1])
    figure = a_figure(tmp_path / "figure.png")
    table_module.log_to_wandb([{"variant": "dense", "test_acc_mean": 97.0}], figure, grid)
    written, = (tmp_path / "wandb-dir" / "wandb").glob("offline-run-*")
    assert {k: v for k, v in run_config(written).items() if k != "_wandb"} == {
        "base": {"arch": "fc2"}, "variants": grid.variants, "sparsities": [0.5, 0.9],
        "epochs": [1, 2], "seeds": [0, 1], "baseline": True}


def test_the_sweep_summary_is_a_wandb_run_of_its_own_beside_the_users_open_one(tmp_path,
                                                                              monkeypatch):
    """The sweep's summary, aggregated where the user has a W&B run open (``mine =
    wandb.init()`` in a notebook), was logged into that run (``wandb.init`` returned it) and
    finished it. It is a run of its own, of the id its folder keeps; ``mine`` stays open and
    ``wandb.run``."""
    import wandb

    from lotterynet import sweep_table as table_module
    from lotterynet.sweep_grid import Sweep

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    figure = a_figure(tmp_path / "sweep" / "figure.png")
    mine = wandb.init(dir=tmp_path, mode="offline")
    try:
        table_module.log_to_wandb([{"variant": "dense", "test_acc_mean": 97.0}], figure,
                                  Sweep({"arch": "fc2", "wandb": True}, [{}], [0.5], [1], [0]))
        assert wandb.run is mine
        mine.log({"mine": 1.0})
    finally:
        mine_written = Path(close_wandb_run(mine))
    run_id = (figure.parent / WANDB_ID_FILE).read_text().split()[0]
    (written,) = (figure.parent / "wandb").glob("offline-run-*")
    assert written.name.endswith(f"-{run_id}") and wandb_exit_code(written) == 0
    logged = read_wandb_summary(next(mine_written.glob("run-*.wandb")))
    assert {k: v for k, v in logged.items() if not k.startswith("_")} == {"mine": 1.0}


def test_the_sweep_summary_table_holds_accuracies_as_fractions_as_its_runs(tmp_path,
                                                                          monkeypatch):
    """The W&B summary table held the sweep's accuracies in percent (97.1), beside its runs'
    ``test/acc`` as fractions (0.971), and each seed's best budget as text (``10/20``); a row
    without the paper's point (``""``) beside one with it failed the table (W&B refused text
    in a column of numbers). It holds fractions, lists of budgets and empty cells; sweep.md
    and sweep.csv keep percent (the rows given are not changed)."""
    from lotterynet import sweep_table as table_module
    from lotterynet.sweep_grid import Sweep

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    figure = a_figure(tmp_path / "figure.png")
    rows = [{"variant": "wide", "sparsity": 0.9, "test_acc_mean": 97.125, "test_acc_std": 0.25,
             "seeds": 2, "best_epochs": "10/20", "paper_acc": 97.24, "gap": -0.12},
            {"variant": "trained", "sparsity": 0.0, "test_acc_mean": 98.5, "test_acc_std": 0.0,
             "seeds": 2, "best_epochs": "5/5", "paper_acc": "", "gap": ""}]
    given = [dict(row) for row in rows]
    table_module.log_to_wandb(rows, figure, Sweep({"wandb": True}, [{"structure": "wide"}],
                                                  [0.9], [5]))
    assert rows == given
    (table,) = (tmp_path / "wandb-dir" / "wandb").glob("offline-run-*/files/**/*.table.json")
    logged = json.loads(table.read_text())
    assert [dict(zip(logged["columns"], row)) for row in logged["data"]] == [
        {"variant": "wide", "sparsity": 0.9, "test_acc_mean": 0.97125, "test_acc_std": 0.0025,
         "seeds": 2, "best_epochs": [10, 20], "paper_acc": 0.9724, "gap": -0.0012},
        {"variant": "trained", "sparsity": 0.0, "test_acc_mean": 0.985, "test_acc_std": 0.0,
         "seeds": 2, "best_epochs": [5, 5], "paper_acc": None, "gap": None}]


@pytest.mark.parametrize("damage", ["terabyte", "not utf-8"])
def test_a_wandb_logged_record_that_cannot_be_read_logs_the_summary_again(tmp_path,
                                                                         monkeypatch, damage):
    """A sweep's wandb-logged record (what its summary run holds) was read whole: one of 1 TiB
    (sparse here, or a damaged copy) was a MemoryError's traceback, one not UTF-8 a
    UnicodeDecodeError's. It reads as no record: the summary is logged, and the record
    written anew."""
    from lotterynet import sweep_table as table_module
    from lotterynet.sweep_grid import Sweep

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    figure = a_figure(tmp_path / "figure.png")
    record = tmp_path / table_module.WANDB_LOGGED_FILE
    if damage == "terabyte":
        terabyte_file(record)
    else:
        record.write_bytes(b"\xff" * 65)
    table_module.log_to_wandb([{"variant": "dense", "test_acc_mean": 97.0}], figure,
                              Sweep({"wandb": True}, [{"structure": "dense"}], [0.5], [1]))
    (table,) = (tmp_path / "wandb-dir" / "wandb").glob("offline-run-*/files/**/*.table.json")
    assert json.loads(table.read_text())["data"] == [["dense", 0.97]]
    assert re.fullmatch(r"[0-9a-f]{64}\n", record.read_text())


def test_a_sweep_summary_is_logged_again_only_where_its_table_changed(tmp_path, monkeypatch):
    """A finished sweep run again (no cell ran) logged its table and figure into its summary
    run again, each time: duplicate entries on its dashboard (offline, another folder of that
    run). The same table is not logged again; one that changed (cells ran) is, once, into the
    same run."""
    from lotterynet import sweep_table as table_module
    from lotterynet.sweep_grid import Sweep

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    figure = a_figure(tmp_path / "figure.png")
    grid = Sweep({"wandb": True}, [{"structure": "dense"}], [0.5], [1])
    for accuracy in (97.0, 97.0, 98.0, 98.0):  # (run again: nothing new, a cell ran, nothing)
        table_module.log_to_wandb([{"variant": "dense", "test_acc_mean": accuracy}], figure,
                                  grid)
    written = list((tmp_path / "wandb-dir" / "wandb").glob("offline-run-*"))
    logged = [json.loads(table.read_text())["data"] for folder in written
              for table in folder.glob("files/**/*.table.json")]
    assert sorted(logged) == [[["dense", 0.97]], [["dense", 0.98]]]
    run_id = (tmp_path / "wandb-id").read_text().splitlines()[0]
    assert all(f"-{run_id}" in folder.name for folder in written)  # (a second's: -1 after it)


def test_the_trained_baselines_wandb_config_names_its_structure(tmp_path, data_dir,
                                                              monkeypatch):
    """A trained baseline's (``--train-weights``) W&B config had no ``structure`` (its
    results.json's spec says dense), so a dashboard filter on the structure missed it."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    out = tmp_path / "run"
    assert main(["--arch", "fc2", "--train-weights", "--epochs", "1", "--limit-train", "100",
                 "--val-size", "100", "--no-progress-bar", "--wandb", "--data-dir",
                 str(data_dir), "--out", str(out)]) == 0
    written, = (tmp_path / "wandb-dir" / "wandb").glob("offline-run-*")
    results = json.loads((out / "results.json").read_text())
    assert run_config(written)["structure"] == results["spec"]["structure"] == "dense"


@pytest.mark.parametrize("values, shown", [
    ({"arch": "fc2"}, {"init": "kaiming_normal"}),
    ({"arch": "fc2", "structure": "malach"}, {"init": "uniform"}),
    ({"arch": "fc2", "structure": "wide", "init": "signed_constant"}, {"init": "signed_constant"}),
    ({"arch": "lenet5", "structure": "orseau"},
     {"init": "hyperbolic", "subnet_convs": False, "conv_init": "kaiming_normal"}),
    ({"arch": "lenet5", "init": "uniform"},
     {"init": "uniform", "subnet_convs": False, "conv_init": "uniform"}),
    ({"arch": "lenet5", "subnet_convs": True}, {"init": "kaiming_normal", "subnet_convs": True}),
    ({"arch": "lenet5", "train_weights": True},
     {"init": "kaiming_normal", "subnet_convs": False, "conv_init": "kaiming_normal"}),
], ids=["fc2", "fc2-malach", "fc2-wide-init", "lenet5-orseau", "lenet5-init", "lenet5-subnet",
        "lenet5-trained"])
def test_a_runs_wandb_config_shows_the_inits_it_drew_and_no_convs_option_it_has_none_for(
        values, shown):
    """An fc2 run's W&B config showed ``init: null`` (the structure's default), so a filter on
    ``init`` missed it, and LeNet5's ``conv_init: null`` and ``subnet_convs: false``, which an
    fc2 run has no convs for. It shows the distributions the run draws from (building the model
    with them gives the same tensors), and leaves out the conv options of a run without frozen
    convs; results.json's config is unchanged (resume and sweeps read it)."""
    from types import SimpleNamespace

    import torch

    from lotterynet.models import build_model
    from lotterynet.run import model_spec, wandb_config

    config = make_config(values)
    spec = model_spec(config, SimpleNamespace(in_channels=1, image_size=28, num_classes=10))
    logged = wandb_config(config, spec, 0.1)
    inits = ("init", "subnet_convs", "conv_init")
    assert {k: logged[k] for k in inits if k in logged} == shown
    assert {"init": values.get("init"), "subnet_convs": values.get("subnet_convs", False),
            "conv_init": None} == {k: config.to_dict()[k] for k in inits}
    drawn = build_model(**{**spec, "init": shown["init"]} | (
        {"conv_init": shown["conv_init"]} if "conv_init" in shown else {})).state_dict()
    assert all(torch.equal(t, drawn[k]) for k, t in build_model(**spec).state_dict().items())


def test_a_cell_the_sweep_runs_is_a_wandb_run_of_job_type_cell(tmp_path, data_dir,
                                                              monkeypatch):
    """A sweep's cells' own W&B runs had no job type, beside its stacks' (``stack``) and its
    summary run's (``sweep-summary``): W&B's runs table could not group or filter the cells
    apart from the runs that span several. A cell the sweep runs (in its process, as its job,
    or a ``--cell`` command: :func:`~lotterynet.sweep.continued_by_the_sweep`) is of job type
    ``cell``, as a stacked cell's own run is (test_stack)."""
    from lotterynet.sweep import run_in_the_sweep

    monkeypatch.setenv("WANDB_MODE", "offline")
    cell = tmp_path / "cells" / "dense-s0.5"
    run_in_the_sweep(cell.name, make_config({
        "arch": "fc2", "structure": "dense", "epochs": 1, "limit_train": 100, "val_size": 100,
        "progress_bar": False, "wandb": True, "data_dir": str(data_dir), "out": str(cell)}))
    (written,) = (cell / "wandb").glob("offline-run-*")
    (job_type,) = [record.run.job_type for record in read_wandb_records(
        next(written.glob("run-*.wandb"))) if record.WhichOneof("record_type") == "run"]
    assert job_type == "cell"


def test_a_stop_ends_only_a_wandb_run_that_started_and_is_open(tmp_path, monkeypatch):
    """A stop (Ctrl-C, SIGTERM) closes its run's W&B run with 130 or 143 (ae0518e); but a stop
    after the run was closed (a stack logging its members) raised W&B's 'Run ... is finished'
    error in place of the stop's line, and a stop before the run started (its data being
    read) started one only to close it (review)."""
    from lotterynet.loggers import end_open_wandb, finish_wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    closed = wandb_logger(tmp_path / "closed")
    closed.log_metrics({"a": 1.0})
    finish_wandb([closed], {"b": 2.0})
    end_open_wandb([closed], 130)  # (raised W&B's UsageError)
    unstarted = wandb_logger(tmp_path / "unstarted")
    end_open_wandb([unstarted], 143)
    assert len(list((tmp_path / "wandb-dir" / "wandb").glob("offline-run-*"))) == 1
    assert unstarted._experiment is None


@pytest.mark.parametrize("fails", ["summary", "ticket", "table"])
def test_a_wandb_run_whose_logging_fails_after_it_started_ends_failed_and_the_error_is_raised(
        tmp_path, monkeypatch, fails):
    """What failed after ``wandb.init`` (writing a run's summary, logging its ticket, a
    sweep's table into its summary run: here the disk full) left the W&B run open until the
    process ended: running on the dashboard, its offline folder without an exit record (in a
    sweep's process the next cell's run took it over). It ends with exit code 1 (W&B marks it
    failed), and the error is raised as it was (a full disk: train.py's one line)."""
    import wandb
    from wandb.sdk.wandb_summary import SummaryDict

    from lotterynet import sweep_table as table_module
    from lotterynet.errors import DiskFullError
    from lotterynet.loggers import finish_wandb
    from lotterynet.sweep_grid import Sweep

    full = DiskFullError(28, "disk full while writing 'x'")

    def failing(*args, **kwargs):
        raise full

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setattr(*{"summary": (SummaryDict, "update"), "ticket": (wandb.Artifact,
                                                                          "add_file"),
                          "table": (wandb, "Image")}[fails], failing)
    ticket = tmp_path / "model.ticket"
    ticket.write_bytes(b"masks")
    with pytest.raises(DiskFullError) as raised:
        if fails == "table":
            table_module.log_to_wandb([{"variant": "dense", "test_acc_mean": 97.0}],
                                      tmp_path / "figure.png", Sweep({"wandb": True},
                                                                     ["dense"], [0.5], [1]))
        else:
            logger = wandb_logger(tmp_path / "run")
            logger.log_metrics({"train/loss": 1.0})
            finish_wandb([logger], {"test/acc": 0.5}, {"": ticket})
    assert raised.value is full
    (written,) = (tmp_path / "wandb-dir" / "wandb").glob("offline-run-*")
    assert wandb.run is None and wandb_exit_code(written) == 1


@pytest.mark.parametrize("fails, code, line", [
    ("disk full", 1, "disk full while writing 'x'; the run is finished: its results are in {}"),
    ("Ctrl-C", 130, "stopped by Ctrl-C (SIGINT); the run is finished: its results are in {}")])
def test_a_run_whose_wandb_logging_fails_at_its_end_keeps_its_results(
        tmp_path, data_dir, monkeypatch, capsys, fails, code, line):
    """A run trained and tested whose W&B end failed or was stopped (its ticket being logged)
    wrote no ``results.json``: it looked unfinished, and the stop's line said to resume it to
    test it again. Its results are written before its W&B run ends: the error and the stop
    name them (a resume of a finished run is refused)."""
    import wandb

    from lotterynet.errors import DiskFullError

    def failing(*args, **kwargs):
        raise DiskFullError(28, "disk full while writing 'x'") if fails == "disk full" \
            else KeyboardInterrupt

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(wandb.Artifact, "add_file", failing)
    out = tmp_path / "run"
    assert main(["--arch", "fc2", "--epochs", "1", "--limit-train", "100", "--val-size", "100",
                 "--no-progress-bar", "--wandb", "--data-dir", str(data_dir),
                 "--out", str(out)]) == code
    results = out / "results.json"
    assert capsys.readouterr().err.splitlines()[-1] == \
        f"train.py: error: {line.format(repr(str(results)))}"
    assert json.loads(results.read_text())["finished"] is True
    (written,) = (out / "wandb").glob("offline-run-*")
    assert wandb.run is None and wandb_exit_code(written) == code


def test_a_run_whose_wandb_debug_log_cannot_be_written_prints_no_logging_error(
        tmp_path, data_dir, monkeypatch, capsys):
    """W&B's folder on a full disk: its debug log (``debug.log``, a handler of Python's
    logging) failed each record, and Python's logging printed "--- Logging error ---" and a
    traceback for each, some 11,000 lines before the run's one line (W&B's log failing as it
    closes). The records it cannot write are dropped; Python's logging still reports a
    handler of its own that fails."""
    import logging

    flush = logging.StreamHandler.flush

    def no_space(self):
        if getattr(self, "baseFilename", "").endswith("debug.log"):
            raise OSError(28, "No space left on device")
        flush(self)

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(logging.StreamHandler, "flush", no_space)
    out = tmp_path / "run"
    assert main(["--arch", "fc2", "--epochs", "1", "--limit-train", "100", "--val-size", "100",
                 "--no-progress-bar", "--wandb", "--data-dir", str(data_dir),
                 "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "--- Logging error ---" not in err and logging.raiseExceptions
    assert err.strip().splitlines()[-1] == (  # (closing its log, it fails)
        f"train.py: error: run {str(out)!r}: W&B failed to log it ([Errno 28] No space left on "
        f"device); the run is finished: its results are in {str(out / 'results.json')!r}; "
        f"{wandb_sync(out)} uploads what its W&B run holds")
    own = logging.FileHandler(tmp_path / "debug.log")
    own.emit(logging.makeLogRecord({"msg": "mine"}))
    monkeypatch.undo()  # (its close flushes)
    own.close()
    assert capsys.readouterr().err.startswith("--- Logging error ---")


@pytest.mark.parametrize("refused, reason", [
    (PermissionError(13, "Permission denied"), "{} is not writable"),  # (W&B's own words)
    (OSError(28, "No space left on device"), "[Errno 28] No space left on device")])
def test_an_os_error_in_wandbs_code_is_its_failure_in_one_line(tmp_path, monkeypatch, refused,
                                                                 reason):
    """W&B's folder not writable (made read-only, another user's) or the disk full under it:
    W&B raised the OSError from its own code, at ``wandb.init`` (or as ``run.finish()`` closed
    its log, once the run was saved) — a traceback. It is W&B's failure, said in one line
    with what is kept."""
    import os

    from wandb.sdk.lib import filesystem

    from lotterynet.errors import WandbFailed

    def refuse(path, *args, **kwargs):  # (as the system answers W&B making its run's folder)
        raise refused

    monkeypatch.setattr(os, "makedirs", refuse)
    folder = tmp_path / "wandb" / "offline-run-1"
    with pytest.raises(WandbFailed) as failed:
        with reporting_wandb_failure("run 'r': W&B failed to log it", lambda: "kept"):
            filesystem.mkdir_exists_ok(folder)
    assert str(failed.value) == f"run 'r': W&B failed to log it ({reason.format(folder)}); kept"


@pytest.mark.parametrize("of", ["run", "stack"])
def test_a_wandb_failure_in_the_fit_ends_the_run(tmp_path, data_dir, monkeypatch, capsys, of):
    """W&B's own error while a run (a stack) logs in its fit (its server out of reach) was one
    line, but the W&B run stayed open until the process ended: in a sweep's process, which now
    goes on with the next cell, that cell's ``wandb.init`` would have taken it over. It ends,
    with the command's exit code (1)."""
    import wandb
    import wandb.errors
    from pytorch_lightning.loggers import WandbLogger

    from lotterynet.stack_files import write_stack_file

    def failing(self, *args, **kwargs):
        assert self.experiment is not None  # (started: what is left open)
        raise wandb.errors.CommError("server down")

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(WandbLogger, "log_metrics", failing)
    small = {"arch": "fc2", "epochs": 1, "limit_train": 100, "val_size": 100,
             "progress_bar": False, "wandb": True, "data_dir": str(data_dir)}
    out = tmp_path / of
    if of == "stack":
        stack_file = write_stack_file([make_config(small)], out, [tmp_path / "cell"])
        argv = ["--stack-file", str(stack_file)]
    else:
        (tmp_path / "run.yaml").write_text(json.dumps(small))
        argv = ["--config", str(tmp_path / "run.yaml"), "--out", str(out)]
    assert main(argv) == 1
    assert "W&B failed to log it (server down)" in capsys.readouterr().err.splitlines()[-1]
    (written,) = (out / "wandb").glob("offline-run-*")
    assert wandb.run is None and wandb_exit_code(written) == 1


@pytest.mark.parametrize("of", ["run", "stack"])
def test_a_run_logs_into_a_wandb_run_of_its_own_beside_the_users_open_one(tmp_path, data_dir,
                                                                           monkeypatch, of):
    """A W&B run the user opened before (``mine = wandb.init()`` in a notebook) was taken over
    by the run (a stack's members too): Lightning's logger reused it, logged the run's metrics
    into it and finished it (``mine.log`` then raised), while ``RUN/wandb-id`` kept another id.
    The run logs into its own W&B run, of the id its folder keeps, and ``mine`` stays open and
    ``wandb.run``, untouched."""
    import wandb

    from lotterynet.run import run
    from lotterynet.stack import run_stack

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    mine = wandb.init(dir=tmp_path, mode="offline")
    try:
        config = make_config({"arch": "fc2", "epochs": 1, "limit_train": 100, "val_size": 100,
                              "progress_bar": False, "wandb": True, "data_dir": str(data_dir),
                              "out": str(tmp_path / "run")})
        if of == "stack":
            run_stack([config], tmp_path / "stack", [tmp_path / "run"])
        else:
            run(config)
        assert wandb.run is mine
        mine.log({"mine": 1.0})
    finally:
        mine_written = Path(close_wandb_run(mine))
    run_id = (tmp_path / "run" / WANDB_ID_FILE).read_text().split()[0]
    (written,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    assert written.name.endswith(f"-{run_id}") and wandb_exit_code(written) == 0
    logged = read_wandb_summary(next(mine_written.glob("run-*.wandb")))
    assert {k: v for k, v in logged.items() if not k.startswith("_")} == {"mine": 1.0}


def test_a_runs_wandb_run_is_wandb_run_where_the_user_has_none_open(tmp_path, monkeypatch):
    """Where no W&B run is open, the run's is ``wandb.run`` while it lasts, as Lightning's
    logger makes it: a callback of the user's that calls ``wandb.log`` logs into it (a new
    run beside ``wandb.run`` is only for a run the user has open)."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    experiment = wandb_logger(tmp_path / "run").experiment
    try:
        assert wandb.run is experiment
    finally:
        close_wandb_run(experiment)
    assert wandb.run is None


@pytest.mark.parametrize("of", ["run", "stack"])
def test_a_stop_before_a_resumes_trainer_ends_its_replayed_wandb_run(tmp_path, data_dir,
                                                                      monkeypatch, of):
    """A resume (a stack's too) replays its history into its W&B run (offline: W&B cannot
    resume one), which starts it before the Trainer is made; a stop between the two (its
    parameter line, its Trainer being made, a stack's hparams.yaml written) left that run
    open: ending the W&B runs began only with the Trainer. It ends with the stop's 130."""
    import wandb

    from lotterynet import run, stack
    from lotterynet.errors import Interrupted

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setenv("WANDB_MODE", "offline")
    small = {"arch": "fc2", "epochs": 2, "limit_train": 100, "val_size": 100,
             "progress_bar": False, "wandb": True, "data_dir": str(data_dir)}
    out = tmp_path / of
    if of == "stack":
        cells = [tmp_path / "cell"]
        stack.run_stack([make_config({**small, "stop_after": 1})], out, cells)
        monkeypatch.setattr(stack, "make_trainer", stopped)
        with pytest.raises(Interrupted):
            stack.run_stack([make_config(small)], out, cells)
    else:
        (tmp_path / "run.yaml").write_text(json.dumps(small))
        assert main(["--config", str(tmp_path / "run.yaml"), "--out", str(out),
                     "--stop-after", "1"]) == 0
        monkeypatch.setattr(run, "make_trainer", stopped)
        assert main(["--resume", str(out / "checkpoints" / "last.ckpt")]) == 130
    # (the first attempt's, ended by its --stop-after; the resume's)
    ended = {wandb_exit_code(folder) for folder in (out / "wandb").glob("offline-run-*")}
    assert wandb.run is None and ended == {0, 130}


@pytest.mark.parametrize("fails", ["ticket", "init", "online init", "stack", "stack init"])
def test_a_wandb_failure_is_one_line_naming_what_is_kept_and_how_to_go_on(
        tmp_path, data_dir, monkeypatch, capsys, fails):
    """W&B's own errors (its server out of reach while a run's ticket uploads, a setting it
    refuses at ``wandb.init``, a ``--stack-file`` stack's tickets) were a traceback. They are
    one line, exit 1, as the sweep's for a member it cannot log: what W&B failed to log, why,
    what is kept (a finished run's results, a stack's members') and how to go on (upload what
    the run's W&B folder holds; start the run over, W&B offline, or without W&B where it was
    offline already; run the sweep again)."""
    import wandb
    import wandb.errors

    from lotterynet.loggers import own_wandb_id
    from lotterynet.run_stops import START_OVER
    from lotterynet.stack import run_again_by
    from lotterynet.stack_files import write_stack_file

    stack_start_over = run_again_by(in_a_sweep=True)[1]  # (--stack-file: a sweep's stack)

    def failing(*args, **kwargs):
        raise wandb.errors.CommError("server down\n<html>")

    monkeypatch.setenv("WANDB_MODE", "online" if fails == "online init" else "offline")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setattr(*(wandb, "init") if fails.endswith("init") else
                        (wandb.Artifact, "add_file"), failing)
    out = tmp_path / "run"
    small = {"arch": "fc2", "epochs": 1, "limit_train": 100, "val_size": 100,
             "progress_bar": False, "wandb": True, "data_dir": str(data_dir)}
    if fails.startswith("stack"):
        stack_file = write_stack_file([make_config({**small, "sparsity": 0.5})],
                                      tmp_path / "stacks" / "s", [tmp_path / "cells" / "a"])
        argv = ["--stack-file", str(stack_file)]
    else:
        argv = ["--config", str(tmp_path / "run.yaml"), "--out", str(out)]
        (tmp_path / "run.yaml").write_text(json.dumps(small))
    assert main(argv) == 1
    err = capsys.readouterr().err
    results = out / "results.json"
    assert "Traceback" not in err
    assert err.splitlines()[-1] == "train.py: error: " + {
        "ticket": f"run {str(out)!r}: W&B failed to log it (server down); the run is finished: "
                  f"its results are in {str(results)!r}; `wandb sync {out}/wandb/*-"
                  f"{own_wandb_id(out)}` uploads what its W&B run holds",
        "init": f"run {str(out)!r}: W&B failed to log it (server down); {START_OVER}; "
                f"--no-wandb runs it without W&B",
        "online init": f"run {str(out)!r}: W&B failed to log it (server down); {START_OVER}; "
                       f"with $WANDB_MODE=offline W&B logs it offline, for `wandb sync` later",
        "stack": "stack s: W&B failed to log it (server down); every member has finished "
                 "(its results are in its cell); run the same sweep again to end it, training "
                 "nothing",
        "stack init": "stack s: W&B failed to log it (server down); no member had finished; "
                      f"{stack_start_over}"}[fails]
    assert (tmp_path / "cells" / "a" / "results.json").is_file() == (fails == "stack") \
        if fails.startswith("stack") else results.is_file() == (fails == "ticket")
    assert wandb.run is None


def test_a_wandb_run_id_is_refused_for_a_sweep_of_several_runs(tmp_path, data_dir, monkeypatch,
                                                                capsys):
    """``$WANDB_RUN_ID`` (what a W&B agent sets for the one cell it runs) made every cell of a
    sweep, and every member of its stacks, continue that one W&B run (review): a sweep with
    ``--wandb`` refuses it before any work; its ``--cell`` run takes it."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_RUN_ID", "abc123")
    out = tmp_path / "sweep"
    assert main(["--arch", "fc2", "--wandb", "--data-dir", str(data_dir), "--sweep-variants",
                 "dense", "--sweep-sparsities", "0.5,0.9", "--sweep-epochs", "1",
                 "--sweep-out", str(out)]) == 2
    assert capsys.readouterr().err == (
        "train.py: error: $WANDB_RUN_ID is 'abc123', which would make every cell of this sweep "
        "one W&B run: unset it (a W&B agent sets it for the one cell it runs, with --cell)\n")
    assert not out.exists()


def test_a_run_out_of_memory_ends_its_wandb_run_failed_with_its_exit_code(tmp_path, data_dir,
                                                                           monkeypatch):
    """A run whose memory ran out left its W&B run open, as a diverged one did: in a sweep's
    process the next cell logged into it. It ends with the run's exit code, 4."""
    import wandb

    from lotterynet.module import EdgePopupModule

    def out_of_memory(self, batch, batch_idx):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not "
                           "enough memory: you tried to allocate 4294967296 bytes.")

    monkeypatch.setattr(EdgePopupModule, "training_step", out_of_memory)
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "run"
    assert main(["--arch", "fc2", "--epochs", "1", "--limit-train", "200", "--val-size", "100",
                 "--no-progress-bar", "--wandb", "--data-dir", str(data_dir),
                 "--out", str(out)]) == 4
    (written,) = (out / "wandb").glob("offline-run-*")
    assert wandb.run is None and wandb_exit_code(written) == 4


@pytest.mark.parametrize("ends, code", [("Ctrl-C", 130), ("SIGTERM", 143), ("memory", 4),
                                        ("disk full", 1), ("finished", 0), ("stop-after", 0)])
def test_a_wandb_logger_given_as_a_trainer_option_ends_with_the_runs_exit_code(
        tmp_path, data_dir, monkeypatch, ends, code):
    """A W&B logger of the user's own, given as a Trainer option (``--trainer.logger``, not
    ``--wandb``: only the Trainer holds it), ends as the run's own W&B run does where the run
    ends early in its fit: stopped, with 130 or 143; memory run out, with 4; another error,
    with 1 (W&B marks those failed); and as it ends otherwise, finished or stopped by
    --stop-after, with 0. Left open (Lightning leaves it so), its run would end only with the
    process (in a sweep's, the next cell's ``wandb.init`` would take it over)."""
    import os
    import signal

    import wandb

    from lotterynet.errors import DiskFullError
    from lotterynet.module import EdgePopupModule

    step = EdgePopupModule.training_step

    def ending(self, batch, batch_idx):
        if ends in ("finished", "stop-after"):
            return step(self, batch, batch_idx)
        if ends == "SIGTERM":  # (the run stops at its next batch)
            os.kill(os.getpid(), signal.SIGTERM)
            return step(self, batch, batch_idx)
        raise {"Ctrl-C": KeyboardInterrupt(), "disk full": DiskFullError(28, "disk full"),
               "memory": RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. "
                                      "DefaultCPUAllocator: not enough memory: you tried to "
                                      "allocate 4294967296 bytes.")}[ends]

    monkeypatch.setattr(EdgePopupModule, "training_step", ending)
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "run"
    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert main(["--arch", "fc2", "--epochs", "2", "--limit-train", "200", "--val-size",
                     "100", "--no-progress-bar", "--trainer.logger", "{class_path: WandbLogger}",
                     *["--stop-after", "1"] * (ends == "stop-after"),
                     "--trainer.limit_test_batches", "1", "--data-dir", str(data_dir),
                     "--out", str(out)]) == code
    finally:  # (train.py's handler stays on its way out)
        signal.signal(signal.SIGTERM, previous)
    (written,) = (out / "wandb").glob("offline-run-*")
    assert wandb.run is None and wandb_exit_code(written) == code


def test_a_diverged_runs_wandb_run_ends_failed_with_its_exit_code(tmp_path, data_dir,
                                                                 monkeypatch):
    """A run that diverged left its W&B run open: W&B closed it at the process's exit as
    finished (exit code 0), and in a sweep's process the next cell's W&B logger took it over
    (``wandb.init`` returns the run in progress), logging into the diverged cell's run. It
    ends with the run's exit code, 3 (W&B marks it failed), its history up to the divergence
    kept."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "run"
    assert main(["--arch", "fc2", "--epochs", "1", "--limit-train", "200", "--val-size", "100",
                 "--lr", "1e30", "--no-progress-bar", "--wandb", "--data-dir", str(data_dir),
                 "--out", str(out)]) == 3
    (written,) = (out / "wandb").glob("offline-run-*")
    assert wandb.run is None and wandb_exit_code(written) == 3
    history = {item.key or "/".join(item.nested_key) for record in read_wandb_records(
        next(written.glob("run-*.wandb"))) if record.WhichOneof("record_type") == "history"
        for item in record.history.item}
    assert {"train/loss", "params/kept", "lr"} <= history
