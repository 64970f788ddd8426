"""The result files of :mod:`lotterynet.approximate`, one JSON per target network, data set and
construction (:func:`result_path`): the keys each must hold (:func:`result_fault`, and
:func:`table_fault` for the table), read checked (:func:`read_result`) and written atomically;
and the refusals, before any work, of a resume onto rows measured on another target."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .approximate_sweeps import FC2_SWEEPS, LAYERS, Sweep
from .checkpointing import write_text_atomic
from .errors import plural
from .machine import read_text_within_memory
from .targets import RECIPES


def result_path(out: Path, net: str, dataset: str, construction: str) -> Path:
    name = f"{net}_{construction}" if net == "fc2" else f"{net}_{dataset}_{construction}"
    return out / f"approximation_{name}.json"


def stored_targets(out: Path, net: str, dataset: str, sweeps: list[Sweep]):
    """``(path, target)`` of every result file of ``sweeps`` already in ``out``."""
    for sweep in sweeps:
        path = result_path(out, net, dataset, sweep.name)
        if path.exists():
            yield path, read_result(path)["target"]


def check_stored_targets(out: Path, net: str, dataset: str, sweeps: list[Sweep], recipe: str,
                         epochs: int | None) -> None:
    """Refuse, before any work, to add rows to a result file measured on another target
    (another recipe, or the same trained for another number of epochs): a resume would take
    its rows as done."""
    epochs = epochs or RECIPES[recipe]["epochs"]
    for path, stored in stored_targets(out, net, dataset, sweeps):
        if (stored["recipe"], stored["epochs"]) != (recipe, epochs):
            raise ValueError(f"{path} holds rows measured on the target {stored['recipe']} "
                             f"trained {plural(stored['epochs'], 'epoch')}, not {epochs}: "
                             f"move it away or give --out another folder")


def check_digests_recorded(out: Path, net: str, dataset: str, sweeps: list[Sweep]) -> None:
    """Refuse, before any work, to add rows to a result file that does not record the digest
    of its target's weights (files written before 5665077): :func:`check_stored_weights`
    could not tell whether its rows were measured on this target."""
    for path, stored in stored_targets(out, net, dataset, sweeps):
        if "weights_sha256" not in stored:
            raise ValueError(f"{path} was measured before targets were recorded by digest (its "
                             f"target has no weights_sha256), so its rows cannot be resumed: "
                             f"move it away or give --out another folder to measure them again")


def check_stored_weights(out: Path, net: str, dataset: str, sweeps: list[Sweep],
                         info: dict) -> None:
    """Refuse to add rows to a result file measured on other target weights than ``info``'s
    (the same recipe trained again elsewhere, or by a lotterynet that drew other initial
    weights), before measuring anything."""
    for path, stored in stored_targets(out, net, dataset, sweeps):
        if stored["weights_sha256"] != info["weights_sha256"]:  # (none: refused already)
            raise ValueError(f"{path} holds rows measured on other {info['recipe']} target "
                             f"weights than {info['run_dir']!r} holds (sha256 "
                             f"{stored['weights_sha256'][:12]}, not "
                             f"{info['weights_sha256'][:12]}): move it away or give --out "
                             f"another folder")


ROW_KEYS = {"construction": str, "size": int, "seed": int, "test_accuracy": float}
#: What a resume reads of a file's target, and its weights_sha256: str where it records one
#: (files of before 5665077 do not).
RESUME_KEYS = {"recipe": str, "epochs": int}
#: What the table and the curves read besides: each key of a result file, of its target and of
#: its rows, with its JSON type (floats finite).
TABLE_KEYS = {"net": str, "dataset": str, "size": str, "paper": str}
TARGET_KEYS = {"test_accuracy": float, "paper_test_accuracy": float, "epochs": int,
               "paper_epochs": int}
CURVE_KEYS = {**ROW_KEYS, "hidden_layer1": int, "weight_error_max": float,
              "weight_error_median": float, "output_relative_error_max": float}
#: The rows of the subset-sum family carry it (every row of a file, or none).
WRONG_SIGN = "all_coefficients_wrong_sign"


def fields_fault(mapping, kinds: dict, where: str) -> str | None:
    """The first key of ``kinds`` that ``mapping`` lacks or holds with another type."""
    for key, kind in kinds.items():
        value = mapping.get(key) if isinstance(mapping, dict) else None
        if type(value) is not kind or (kind is float and not math.isfinite(value)):
            return f"{where} without {key}: {kind.__name__}"
    return None


def result_fault(data) -> str | None:
    """What keeps ``data`` from being an approximation result file, or None."""
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        return "not a mapping with rows"
    if not rows:
        return "no rows"
    if data.get("construction") not in {sweep.name for sweep in FC2_SWEEPS}:
        return f"no known construction {data.get('construction')!r}"
    if not isinstance(data.get("target"), dict):
        return "no target"
    seen = set()
    for row in rows:
        fault = fields_fault(row, ROW_KEYS, "a row")
        if not fault and (row["construction"] != data["construction"] or row["size"] < 1
                          or not 0 <= row["test_accuracy"] <= 1):
            fault = (f"a row of construction {row['construction']!r}, size {row['size']}, "
                     f"test accuracy {row['test_accuracy']}")
        if not fault and (row["size"], row["seed"]) in seen:
            fault = f"two rows of size {row['size']}, seed {row['seed']}"
        if fault:
            return fault
        seen.add((row["size"], row["seed"]))
    digest = {"weights_sha256": str} if "weights_sha256" in data["target"] else {}
    return fields_fault(data["target"], {**RESUME_KEYS, **digest}, "a target")


def table_fault(data: dict) -> str | None:
    """What keeps a result file (:func:`result_fault` passed) out of the table, or None."""
    if data.get("net") not in LAYERS:
        return f"net {data.get('net')!r} is none of {', '.join(LAYERS)}"
    fault = fields_fault(data, TABLE_KEYS, "a file") or fields_fault(
        data["target"], TARGET_KEYS, "a target")
    signs = {WRONG_SIGN: int} if any(WRONG_SIGN in row for row in data["rows"]) else {}
    for row in data["rows"]:
        fault = fault or fields_fault(row, {**CURVE_KEYS, **signs}, "a row") or fields_fault(
            row.get("params"), {"kept": int}, "a row's params")
        if not fault and row["hidden_layer1"] < 1:
            fault = f"a row of {row['hidden_layer1']} hidden units in layer 1"
    return fault


def read_result(path: Path, for_table: bool = False) -> dict:
    """An approximation result file (``net``, ``construction``, ``target``, ``rows``), checked:
    anything else (not JSON, rows without their keys, a folder) is a :class:`ValueError`
    naming the file, never a half-read table (nor, where it is larger than the memory, a
    MemoryError's traceback)."""
    try:
        data = json.loads(read_text_within_memory(path, "it", OSError))
        fault = result_fault(data) or (table_fault(data) if for_table else None)
        if not fault and for_table and not path.name.startswith(f"approximation_{data['net']}_"):
            fault = f"net {data['net']!r} in a file named {path.name!r}"
    except (OSError, ValueError) as err:
        fault = str(err)
    if fault:
        raise ValueError(f"{path} is not an approximation result file ({fault}); move it away "
                         f"or restore it")
    return data


def write_json(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")
