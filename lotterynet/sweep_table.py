"""A sweep's results: its cells aggregated as Pensia et al. do (:func:`aggregate`), the table
as CSV and Markdown (:func:`write_table`), the figure (:func:`plot`) and the sweep's W&B summary
run (:func:`log_to_wandb`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import statistics
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from .checkpointing import savefig_atomic, write_csv_atomic, write_text_atomic
from .config import RunConfig
from .data import DATASETS
from .errors import ConfigError, plural
from .machine import read_json_within_memory, read_text_within_memory
from .params import kept_params
from .pensia_figure2 import LABELS, TRAINED, paper_accuracy
from .resumable import is_real
from .run_dir import RESULTS
from .sweep_cells import cells_use
from .sweep_grid import BASELINE, Sweep, cell_name, config_value, hash_legend


def best_budget(runs: list[dict]) -> tuple[dict, str]:
    """The results of the best epoch budget among one (variant, sparsity, seed)'s ``runs``,
    with the accuracy that chose it (``best_by``): ``val_acc`` where every budget has one (a
    validation split held out: choosing on the test accuracy that is then reported would
    bias it upwards), else ``test_acc``, Pensia et al.'s protocol (their runs hold out no
    validation split, ``val_size`` 0: the best test accuracy of their 10-100 epoch runs);
    ``""`` for one budget (nothing chosen). Of equal ones the earliest budget."""
    by = "val_acc" if all(r.get("val_acc") is not None for r in runs) else "test_acc"
    return max(runs, key=lambda r: r[by]), by if len(runs) > 1 else ""


def seeds_chosen_by(criteria: list[str]) -> str:
    """A point's ``best_by`` from its seeds' (:func:`best_budget`'s, in ``best_epochs``'
    order): their criterion once where those that chose agree, else each seed's, ``-`` for a
    seed of one budget (``test_acc/val_acc/-``: a seed short of a budget's validation, as a
    cell that validates every 5th epoch at 2 epochs, chose by test accuracy), so that no
    reader takes a mixed point for one criterion per seed or the other way round."""
    used = set(criteria) - {""}
    return "/".join(by or "-" for by in criteria) if len(used) > 1 else "".join(used)


def aggregate(sweep: Sweep, sweep_dir: Path) -> list[dict]:
    """Per (variant, sparsity, seed) the test accuracy of the best epoch budget
    (:func:`best_budget`: by validation accuracy where the cells have it, else by test
    accuracy, the paper's protocol; ``best_by`` says which: :func:`seeds_chosen_by`), each
    seed's budget in ``best_epochs``, in seed order; mean and standard
    deviation over seeds (empty for a point of one seed, as ``paper_acc`` where the paper has
    none: no spread was measured, where 0.0 said none was found); the fraction of the
    maskable weights the cells' masks prune
    (``pruned``: the nominal ``sparsity`` is rounded to a kept count per tensor, and per group
    of terms in fixedsize, which keeps 1 of 3 at 0.6); Pensia et al.'s accuracy for the point
    (``paper_acc``, from the cells' own settings) and ours minus theirs (``gap``), empty where
    the paper has none. ``kept_params`` counts the masked weights alone: where a variant also
    trains weights (``--exclude``'s layers), a ``trained_params`` column counts them (the
    trained baseline's: all its weights). A point some of whose cells have no results (a
    sweep stopped, a cell failed) names them in a ``missing`` column (``e20-seed1, ...``, the
    end of their cells' names; the column only where a point lacks one): its mean is of the
    budgets and seeds found; a point none of whose cells has results has a row of its variant
    and sparsity, ``seeds`` 0 and ``missing``, every other column empty (no row at all where
    no cell has results: no table).
    Rows sorted by variant, then kept parameters (a variant's points without results last, in
    the grid's order)."""
    budgets: dict[tuple, list[dict]] = {}
    missing: dict[tuple, list[str]] = {}
    for label, values in sweep.cells():
        results_file = sweep_dir / "cells" / cell_name(label, values) / RESULTS
        sparsity = 0.0 if label == BASELINE else values["sparsity"]
        if not results_file.is_file():
            missing.setdefault((label, sparsity), []).append(
                f"e{values['epochs']}-seed{values['seed']}")
            continue
        budgets.setdefault((label, sparsity, values["seed"]), []).append(
            read_cell_results(results_file))
    groups: dict[tuple, dict[int, tuple[dict, str]]] = {}
    for (label, sparsity, seed), runs in budgets.items():
        groups.setdefault((label, sparsity), {})[seed] = best_budget(runs)
    rows = []
    for (label, sparsity), seeds in groups.items():
        # (in seed order, where a seed's first cells are missing too: best_epochs and best_by)
        chosen = [seeds[seed] for seed in sorted(seeds)]
        runs = [results for results, _ in chosen]
        accs = [100 * r["test_acc"] for r in runs]
        kept = [kept_params(r["params"]) for r in runs]
        maskable = runs[0]["params"]["maskable"]  # (0: the trained baseline, unpruned)
        pruned = 1 - statistics.mean(r["params"]["kept"] for r in runs) / maskable \
            if maskable else 0.0
        # (a score per maskable weight: whatever else trains is a weight)
        trained = statistics.mean(r["params"]["trainable"] - r["params"]["maskable"]
                                  for r in runs)
        rows.append({"variant": label, "sparsity": sparsity, "pruned": round(pruned, 4),
            "kept_params": round(statistics.mean(kept)), "maskable_params": maskable,
            "trained_params": round(trained),
            "test_acc_mean": round(statistics.mean(accs), 3),
            "test_acc_std": round(statistics.stdev(accs), 3) if len(accs) > 1 else "",
            "seeds": len(runs), "best_epochs": "/".join(
                str(r["config"]["epochs"]) for r in runs),
            "best_by": seeds_chosen_by([by for _, by in chosen]),
            "missing": ", ".join(missing.get((label, sparsity), []))})
        # (a cell written before an option existed ran with its default, as the sweep reads it)
        paper = paper_accuracy({**RunConfig().to_dict(), **runs[0]["config"]})
        rows[-1]["paper_acc"] = "" if paper is None else paper
        rows[-1]["gap"] = "" if paper is None else round(rows[-1]["test_acc_mean"] - paper, 2)
    if rows:  # (a point none of whose cells has results: a row of its name and missing cells)
        rows += [{**dict.fromkeys(rows[0], ""), "variant": label, "sparsity": sparsity,
                  "seeds": 0, "missing": ", ".join(cells)}
                 for (label, sparsity), cells in missing.items() if (label, sparsity) not in groups]
    unused = {"missing"} if not any(row["missing"] for row in rows) else set()
    if not any(row["trained_params"] for row in rows if row["variant"] != BASELINE):
        unused.add("trained_params")
    rows = [{k: v for k, v in row.items() if k not in unused} for row in rows]
    return sorted(rows, key=lambda r: (r["variant"] == BASELINE, r["variant"], not r["seeds"],
                                       r["kept_params"]))


def read_cell_results(path: Path) -> dict:
    """A cell's ``results.json`` as :func:`aggregate` reads it; one it cannot tabulate (not
    JSON, as a write cut short or a hand edit leaves it, or without the test accuracy,
    parameter counts or epochs its row holds) is refused in one line naming it, where it was
    a JSONDecodeError's or KeyError's traceback. Moved away, the sweep run again reruns the
    cell (from its checkpoint, where it has one); one not a mapping with a test accuracy in
    [0, 1] it sets aside and trains anew itself (:func:`~lotterynet.sweep_cells.plan_cell`)."""
    results, fault = read_json_within_memory(path, results_fault)  # (read whole, a file of a
    # terabyte was a MemoryError's traceback)
    if fault:
        raise ConfigError(f"{path} is not a finished cell's results ({fault}); move it away (the "
                          f"sweep run again reruns the cell) or restore it")
    return results


def results_fault(results) -> str | None:
    """What keeps ``results`` (a cell's, as read) from a row of :func:`aggregate`, or None."""
    if not isinstance(results, dict):
        return "not a mapping"
    acc, val = results.get("test_acc"), results.get("val_acc")
    if not (is_real(acc) and 0 <= acc <= 1):
        return "no test accuracy in [0, 1]"
    if not (val is None or is_real(val)):
        return f"a validation accuracy of {val!r}"
    params, config = results.get("params"), results.get("config")
    if not (isinstance(params, dict) and all(type(params.get(key)) is int
                                             for key in ("kept", "trainable", "maskable"))):
        return "no parameter counts (kept, trainable, maskable)"
    if not (isinstance(config, dict) and type(config.get("epochs")) is int):
        return "no epochs in its config"
    return None


#: What :func:`write_table` (the table as CSV and Markdown) and :func:`plot` (the figure as
#: PNG and PDF) write into the sweep's folder.
TABLE_CSV, TABLE_MD, FIGURES = "sweep.csv", "sweep.md", ("figure.png", "figure.pdf")
TABLE_FILES = (TABLE_CSV, TABLE_MD, *FIGURES)


def spelled_rows(rows: list[dict], spelled: dict[str, str]) -> list[dict]:
    """The rows with a ``variant_values`` column after ``variant`` that writes out the lists
    and mappings its label names by a hash
    (``spelled``: :func:`lotterynet.sweep_grid.spelled_labels`),
    where any variant has one: the table as a CSV file or a W&B table is read without
    sweep.md's legend."""
    if not spelled:
        return rows
    return [{"variant": row["variant"],
             "variant_values": spelled.get(row["variant"], row["variant"]), **row}
            for row in rows]


#: How :func:`best_budget` chose the epoch budgets, in words (:func:`chosen_by`).
CHOSEN_BY = {"val_acc": "by validation accuracy",
             "test_acc": "by test accuracy, the paper's protocol (no validation split)"}


def chosen_by(rows: Sequence[dict]) -> str | None:
    """How the rows' epoch budgets were chosen (their ``best_by``), in words: the line above
    sweep.md's table and under the figure's title, so that a number chosen on the test set
    is read as such; None where no point had more than one budget (nothing chosen)."""
    found = list(dict.fromkeys(by for row in rows for by in row.get("best_by", "").split("/")
                               if by in CHOSEN_BY))
    if len(found) > 1:
        return ("by validation accuracy where each budget of a seed has one, else by test "
                "accuracy, the paper's protocol (best_by)")
    return CHOSEN_BY[found[0]] if found else None


def write_table(rows: list[dict], sweep_dir: Path, variants: list[dict],
                spelled: dict[str, str]) -> str:
    """The rows as CSV (with :func:`spelled_rows`' column, from ``spelled``) and as a Markdown
    table, above which a line says how the epoch budgets were chosen (:func:`chosen_by`), and
    under which a legend of the ``KEY=<hash>`` that name the variants' lists and
    mappings (:func:`lotterynet.sweep_grid.hash_legend`), where there are any; returns the
    Markdown, which the sweep prints (read back from its file in the locale's encoding, not the
    UTF-8 it is written in, a non-ASCII label was a UnicodeDecodeError under another locale)."""
    csv_rows = spelled_rows(rows, spelled)
    write_csv_atomic(sweep_dir / TABLE_CSV, csv_rows, list(csv_rows[0]))
    chosen = chosen_by(rows)
    lines = [f"Best of the epoch budgets {chosen}.", ""] if chosen else []
    lines += ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in rows]
    legend = hash_legend(variants)
    if legend:
        lines += ["", *(f"- `{label}`: `{value}`" for label, value in legend.items())]
    text = "\n".join(lines) + "\n"
    write_text_atomic(sweep_dir / TABLE_MD, text)
    return text


def figure_title(sweep: Sweep, rows: Sequence[dict] = ()) -> str:
    """What a reader needs to place the figure: architectures, data, budgets, seeds, and
    under them how the budgets were chosen (:func:`chosen_by`, from the table's ``rows``)."""
    *more, last = sweep.epochs
    budgets = f"best of {', '.join(map(str, more))} or {last} epochs" if more else \
        plural(last, "epoch")
    chosen = chosen_by(rows)
    return (f"{', '.join(cells_use(sweep, 'arch'))} on {', '.join(cells_use(sweep, 'dataset'))}"
            f": {budgets}, {plural(len(sweep.seeds), 'seed')}"
            + (f"\nchosen {chosen}" if chosen else ""))


def chance_accuracy(sweep: Sweep) -> float | None:
    """The test accuracy (%) of a guess: 100 over the classes of the cells' data sets, None
    where they differ in their number of classes (no one chance line)."""
    classes = {DATASETS.get(dataset).num_classes for dataset in cells_use(sweep, "dataset")}
    return 100 / classes.pop() if len(classes) == 1 else None


def baseline_name(sweep: Sweep) -> str:
    """The trained baseline's name in the figure: "trained dense", with the architecture and
    data set it was trained on (the base's) where the cells use more than one of either."""
    mixed = len(cells_use(sweep, "arch")) > 1 or len(cells_use(sweep, "dataset")) > 1
    return "trained dense" + (f" {config_value(sweep.base, 'arch')} on "
                              f"{config_value(sweep.base, 'dataset')}" if mixed else "")


def paper_trained_accuracy(sweep: Sweep) -> float | None:
    """Pensia et al.'s trained dense accuracy (%) for the figure, where every cell is one of
    their architectures on MNIST (the same one), else None."""
    archs = cells_use(sweep, "arch")
    return TRAINED.get(archs[0]) if len(archs) == 1 and cells_use(sweep, "dataset") == [
        "mnist"] else None


#: The longest variant label the figure's legend spells out (:func:`plot`).
LEGEND_LABEL_MAX = 48
#: The figure's legend for the bands of the variants' lines (:func:`plot`), where they have
#: several seeds: ``test_acc_std``, the sample standard deviation.
BAND = "± 1 std over the seeds"
#: The figure's legend for a point (an ``x`` on it) some of whose cells have no results
#: (:func:`aggregate`'s ``missing``).
INCOMPLETE = "missing budgets or seeds"


def plot(rows: list[dict], sweep_dir: Path, title: str, paper_trained: float | None,
         chance: float | None, spelled: dict[str, str] | None = None,
         baseline: str = "trained dense") -> Path:
    """Test accuracy against kept parameters (log x): one line per variant (a band of ± one
    standard deviation when there are several seeds, named in the legend: :data:`BAND`),
    Pensia et al.'s points as hollow markers
    of the same colour, the trained baseline as a dashed line named ``baseline``
    (:func:`baseline_name`; the paper's, ``paper_trained``,
    as a thin grey one: :func:`paper_trained_accuracy`), ``chance`` as a dotted one
    (:func:`chance_accuracy`; None: none); a point missing some of its cells crossed
    (:data:`INCOMPLETE`), one without results (no ``test_acc_mean``) not drawn. Written as
    PNG and PDF. A variant is named in the
    legend with its lists and mappings written out (``spelled``:
    :func:`lotterynet.sweep_grid.spelled_labels`) where that is at most :data:`LEGEND_LABEL_MAX`
    characters long, else by its label's hashes (sweep.md's legend decodes them). The legend
    stands right of the axes: inside, its up to a dozen entries covered the points and the
    baseline's line."""
    from matplotlib.figure import Figure  # (not pyplot: the caller's backend stays as it is)
    from matplotlib.patches import Patch

    rows = [r for r in rows if r["test_acc_mean"] != ""]  # (a point without results: no number)

    def legend_name(variant: str) -> str:
        written = (spelled or {}).get(variant, variant)
        return LABELS.get(variant, written if len(written) <= LEGEND_LABEL_MAX else variant)

    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    banded = False
    for variant in dict.fromkeys(r["variant"] for r in rows if r["variant"] != BASELINE):
        points = [r for r in rows if r["variant"] == variant]
        kept = [r["kept_params"] for r in points]
        mean = [r["test_acc_mean"] for r in points]
        line, = ax.plot(kept, mean, marker="o", label=legend_name(variant))
        if any(r["seeds"] > 1 for r in points):
            std = [math.nan if r["test_acc_std"] == "" else r["test_acc_std"]  # (no band
                   for r in points]  # at a point of one seed)
            ax.fill_between(kept, [m - s for m, s in zip(mean, std)],
                            [m + s for m, s in zip(mean, std)], color=line.get_color(), alpha=0.2)
            banded = True
        paper = [(k, r["paper_acc"]) for k, r in zip(kept, points) if r.get("paper_acc") != ""]
        if paper:
            ax.scatter(*zip(*paper), facecolors="none", edgecolors=line.get_color(), s=60,
                       label=f"{legend_name(variant)} (Pensia et al.)")
    incomplete = [(r["kept_params"], r["test_acc_mean"]) for r in rows
                  if r.get("missing") and r["variant"] != BASELINE]
    if incomplete:
        ax.scatter(*zip(*incomplete), marker="x", color="black", s=60, zorder=3,
                   label=f"{INCOMPLETE} (sweep.md)")
    for r in rows:
        if r["variant"] == BASELINE:
            ax.axhline(r["test_acc_mean"], color="black", linestyle="--",
                       label=f"{baseline} ({r['test_acc_mean']:.2f}%"
                             f"{'; ' + INCOMPLETE if r.get('missing') else ''})")
    if paper_trained is not None:
        ax.axhline(paper_trained, color="grey", linestyle="--", linewidth=0.8,
                   label=f"trained dense, Pensia et al. ({paper_trained:.2f}%)")
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", label="chance")
    ax.set(xscale="log", xlabel="kept parameters", ylabel="test accuracy (%)", title=title)
    ax.grid(alpha=0.3, which="both")
    handles = ax.get_legend_handles_labels()[0]
    handles += [Patch(color="grey", alpha=0.2, label=BAND)] if banded else []
    ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1),
              borderaxespad=0)
    for name in FIGURES:
        savefig_atomic(fig, sweep_dir / name, dpi=120, bbox_inches="tight")
    return sweep_dir / FIGURES[0]


#: Written in a sweep's folder once its W&B summary run holds its table and figure: a digest
#: of what was logged (:func:`log_to_wandb`).
WANDB_LOGGED_FILE = "wandb-logged"


def log_to_wandb(rows: list[dict], figure: Path, sweep: Sweep) -> None:
    """The sweep's table and figure, as a run of its own in the cells' W&B group (and
    project, entity, tags, notes): one run per sweep (its id kept in the sweep's folder,
    beside the figure), which each aggregation resumes; its W&B files where the cells' go
    (:func:`~lotterynet.loggers.wandb_dir`). Its config is the sweep's resolved grid, as its
    folder's :data:`SWEEP_FILE` holds it (base, variants, sparsities, epochs, seeds), the base
    as a run's config shows it (:func:`~lotterynet.loggers.wandb_config`). Logged only where
    that run does not hold them yet (:data:`WANDB_LOGGED_FILE` says what it holds): the sweep
    run again with nothing new (no cell ran) logged the same table and figure into it again,
    a duplicate on its dashboard; a table that changed (cells ran), another run or place
    (the id, project, group, ..., mode) or a logging that did not end logs them, once."""
    import wandb

    from .loggers import (
        close_wandb_run,
        ending_wandb_on_failure,
        quietly_started,
        summary_wandb_id,
        wandb_config,
        wandb_dir,
        wandb_options,
    )

    grid = dataclasses.asdict(sweep)
    options = wandb_options(sweep.base)
    run_id = summary_wandb_id(figure.parent)
    config = {**grid, "base": wandb_config(grid["base"])}
    rows = wandb_table_rows(rows)
    # (the figure is drawn from the rows and the grid)
    logged = hashlib.sha256(json.dumps([run_id, options, config, rows]).encode()).hexdigest()
    if logged_record(figure.parent / WANDB_LOGGED_FILE) == logged:
        return
    summary = quietly_started(partial(  # (beside a run the user has open, which W&B
        # returned, or in a notebook finished)
        wandb.init, job_type="sweep-summary", name=f"{options['group']}-summary",
        dir=wandb_dir(figure.parent), id=run_id, config=config, resume="allow",
        reinit="create_new", **options))
    with ending_wandb_on_failure(partial(close_wandb_run, summary)):
        table = wandb.Table(columns=list(rows[0]), data=[list(r.values()) for r in rows])
        summary.log({"sweep/table": table, "sweep/figure": wandb.Image(str(figure))})
    close_wandb_run(summary)
    write_text_atomic(figure.parent / WANDB_LOGGED_FILE, logged + "\n")


def logged_record(record: Path) -> str | None:
    """The digest in a sweep's :data:`WANDB_LOGGED_FILE`; None where there is none or it
    cannot be read (not text, larger than the memory: read whole, a MemoryError's traceback),
    which :func:`log_to_wandb` then logs again and writes anew."""
    try:
        return read_text_within_memory(record, str(record), OSError).strip()
    except (OSError, ValueError):  # (none, a folder, unreadable, not UTF-8)
        return None


#: The table's columns in percent (``gap`` in points) in sweep.md and sweep.csv, as the
#: paper's tables: :func:`wandb_table_rows` gives them as fractions.
PERCENT_COLUMNS = ("test_acc_mean", "test_acc_std", "paper_acc", "gap")


def wandb_table_rows(rows: list[dict]) -> list[dict]:
    """The table's rows as the W&B summary table holds them: the accuracies
    (:data:`PERCENT_COLUMNS`) as fractions, as its runs' ``test/acc``, beside which they are
    read (sweep.md and sweep.csv keep the paper's percent); ``best_epochs``, each seed's best
    budget (``10/20`` there), a list of numbers; a point the paper lacks (``""`` there) empty:
    W&B types each column, and refused text beside numbers (a grid the paper has only some
    points of failed at its summary)."""
    def value(key: str, written):
        if written == "":
            return None
        if key in PERCENT_COLUMNS:
            return round(written / 100, 5)
        return [int(e) for e in written.split("/")] if key == "best_epochs" else written

    return [{key: value(key, written) for key, written in row.items()} for row in rows]
