"""A sweep's grid: ``variant × sparsity × epoch budget × seed`` plus the trained baseline, read
from a sweep file (:func:`read_sweep_file`) and the ``--sweep-*`` flags (:func:`parse_list`),
its lists' items checked (:func:`check_sweep_values`) and every cell checked as a run config
before anything runs; and the W&B sweep file that lists its cells. How the cells run:
:mod:`lotterynet.sweep`.

Only the config layer is imported here (no Lightning), so a bad sweep file is refused, and a
W&B sweep file written, at once.

Sweep file (YAML)::

    base: {arch: fc2, lr: 0.1, ...}          # RunConfig keys shared by every cell
    variants: [subsetsum:identity, subsetsum:relu, wide]   # "structure[:activation]" or maps
    sparsities: [0.5, 0.9]                   # fraction PRUNED
    epochs: [10, 20]                         # epoch budgets (the best one is kept)
    seeds: [0]
    baseline: true                           # the trained dense net, per epoch budget and seed
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import itertools
import math
import os
import re
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from .config import NOT_COMPUTED, make_config
from .config_checks import (
    SEED_MAX,
    WANDB_OPTIONS,
    check_path,
    check_wandb_names,
    refuse_unread_file_options,
    refuse_unread_flags,
)
from .config_flags import flatten_sections, given_flags, overlay
from .config_schema import FIELDS, WIDE, RunConfig
from .config_yaml import MAX_FILE_BYTES, dump_yaml, read_yaml_mapping, string_keys
from .errors import ConfigError, flag_name
from .machine import read_json_within_memory
from .path_checks import check_output_dir

BASELINE = "trained"
#: What makes a folder a sweep's: the sweep it runs, and the lock a running sweep holds.
SWEEP_FILE, SWEEP_LOCK = "sweep.json", ".sweep.lock"
SWEEP_KEYS = ("base", "variants", "sparsities", "epochs", "seeds", "baseline")
#: The run keys the grid sets in every cell, and where a sweep lists their values.
AXES = {"sparsity": "sparsities", "epochs": "epochs", "seed": "seeds"}


@dataclass
class Sweep:
    base: dict
    variants: list[dict]
    sparsities: list[float]
    epochs: list[int]
    seeds: list[int] = field(default_factory=lambda: [0])
    baseline: bool = True

    def cells(self) -> list[tuple[str, dict]]:
        """``(label, config values)`` of every cell, baseline cells last."""
        cells = [(variant_label(variant), values)
                 for variant in self.variants for values in self.variant_values(variant)]
        if self.baseline:
            cells += [(BASELINE, {**self.base, "train_weights": True, "structure": "dense",
                                  "epochs": epochs, "seed": seed})
                      for epochs, seed in itertools.product(self.epochs, self.seeds)]
        return cells

    def size(self) -> int:
        """How many cells :meth:`cells` lists, counted from the axes (none built)."""
        per_variant = len(self.epochs) * len(self.seeds)
        return per_variant * (len(self.variants) * len(self.sparsities) + self.baseline)

    def variant_values(self, variant: dict) -> list[dict]:
        """The config values of the variant's cells, one for each sparsity, epochs and seed."""
        return [{**self.base, **variant, "sparsity": sparsity, "epochs": epochs, "seed": seed}
                for sparsity, epochs, seed in itertools.product(
                    self.sparsities, self.epochs, self.seeds)]


def parse_variant(variant) -> dict:
    """``"subsetsum:identity"`` -> ``{structure: subsetsum, activation: identity}``."""
    if isinstance(variant, dict):
        return dict(variant)
    structure, colon, activation = str(variant).partition(":")
    return {"structure": structure, **({"activation": activation} if colon else {})}


def variant_label(variant: dict, spelled: bool = False, old: str | None = None) -> str:
    """The variant's values joined by ``/``, each as :func:`value_label` writes it, in one
    order whatever the order of its keys (:func:`label_items`: ``subsetsum/identity/pairs=3``
    for ``{pairs: 3, activation: identity, structure: subsetsum}`` too): its rows in the
    table, and with ``-`` for ``/`` its cells' and stacks' folder names. ``spelled``: with its
    lists and mappings written out (:func:`spelled_labels`); ``old``: in that form of
    :data:`OLD_LABELS`, as sweeps labelled it before, whose folders a sweep renames
    (:func:`lotterynet.sweep_cells.rename_old_folders`)."""
    items = variant.items() if old else label_items(variant)
    return "/".join(value_label(key, value, spelled, old == "keyless") for key, value in items)


#: The forms of a variant's label that sweeps wrote before (:func:`variant_label`'s ``old``)
#: -> what is written otherwise now (said where a sweep renames their folders). Both wrote the
#: keys in the variant's own order.
OLD_LABELS = {
    "given": "a variant's label lists its structure, its activation, then its other keys by "
             "name, in whatever order the variant gives them",
    "keyless": "a variant's label names the key of each value but its structure and activation",
}
#: The most keys of a variant whose every order :func:`old_labels` tries (5! = 120 labels).
ORDERED_KEYS = 5


def old_labels(variant: dict, form: str) -> list[str]:
    """The labels that sweeps gave the variant before, in that form of :data:`OLD_LABELS`:
    its keys in the order it gives them, and for ``given`` in every other order too, as its
    sweep file gave them when the folders were written (a file whose keys were reordered
    since: ``{activation: identity, structure: subsetsum}`` wrote ``identity/subsetsum``).
    Every key counts, structure and activation too; a variant of more than
    :data:`ORDERED_KEYS` keys (its ``n!`` orders, each computed for every one of its cells on
    every sweep start) is tried in its order alone. ``keyless`` labels, whose values name no
    key, in its order alone: in another, a variant's label could be another's (``2/3``, ``3/2``
    for both ``{pairs: 2, depth: 3}`` and ``{pairs: 3, depth: 2}``), neither then renamed."""
    orders = itertools.permutations(variant.items()) \
        if form == "given" and len(variant) <= ORDERED_KEYS else [variant.items()]
    return list(dict.fromkeys(variant_label(dict(order), old=form) for order in orders))


#: The kinds of value that a variant's label names by a hash (:func:`variant_label`).
HASHED = (list, tuple, dict)
#: The keys whose value a variant's label writes alone (``subsetsum/identity``), first and in
#: this order (:func:`label_items`): the labels of the paper's curves, and of every sweep in
#: results/, as they always were.
UNNAMED = ("structure", "activation")


def label_items(variant: dict) -> list[tuple[str, object]]:
    """The variant's ``(key, value)`` in the order of its label: :data:`UNNAMED`'s keys, then
    the others by name (a sweep file's keys written in another order name the same folders)."""
    return sorted(variant.items(), key=lambda kv: (
        UNNAMED.index(kv[0]) if kv[0] in UNNAMED else len(UNNAMED), kv[0]))


def value_label(key: str, value, spelled: bool = False, keyless: bool = False) -> str:
    """``value`` as it stands in its variant's label: ``KEY=<hash>`` for a list or mapping
    (``spelled``: ``KEY=<its value>``, :func:`canonical`'s repr), itself for a structure or
    activation, else ``KEY=VALUE`` (``pairs=3``: a value says what it sets, and two variants
    that set one value in other keys have other labels); ``keyless``: a scalar itself, as
    labels were before."""
    if isinstance(value, HASHED):
        return f"{key}={canonical(value)!r}" if spelled else f"{key}={digest(value)}"
    return str(value) if key in UNNAMED or keyless else f"{key}={value}"


def hash_legend(variants: list[dict]) -> dict[str, str]:
    """``KEY=<hash>`` -> ``KEY = <value>`` (the value whose repr is hashed, :func:`canonical`)
    for every list or mapping that the variants' labels name by its hash, in the order of the
    variants: what the table's reader needs to decode them. Empty for variants of scalars."""
    return {value_label(key, value): f"{key} = {canonical(value)!r}"
            for variant in variants for key, value in label_items(variant)
            if isinstance(value, HASHED)}


def spelled_labels(variants: list[dict]) -> dict[str, str]:
    """The label of each variant that names a list or mapping by its hash -> that label with
    the values written out (``dense/exclude=['stem.conv']``), for the readers of the CSV table,
    W&B's and the figure. Empty for variants of scalars."""
    return {variant_label(variant): variant_label(variant, spelled=True)
            for variant in variants if any(isinstance(v, HASHED) for v in variant.values())}


def digest(value) -> str:
    """8 hex digits of the SHA-256 of ``value``'s repr, its mappings' keys in order
    (:func:`canonical`): the same for the same value in every process (unlike :func:`hash`),
    however its mappings were written."""
    return hashlib.sha256(repr(canonical(value)).encode()).hexdigest()[:8]


def canonical(value):
    """``value`` with the keys of its mappings sorted (strings first), at every depth, and its
    tuples as lists: equal values are the same ``canonical`` and have the same repr."""
    if isinstance(value, dict):
        return {key: canonical(item) for key, item in
                sorted(value.items(), key=lambda kv: (not isinstance(kv[0], str), str(kv[0])))}
    if isinstance(value, (list, tuple)):
        return [canonical(item) for item in value]
    return value


def cell_name(label: str, values: dict, portable: bool = False) -> str:
    """The name of a cell's folder here; ``portable``: as every system but Windows names it
    (:func:`folder_label`), which ``--cell`` takes on every system (:func:`in_a_folder_name`
    maps it to the name there): what a W&B sweep's file lists, whose agents may run anywhere."""
    sparsity = "" if label == BASELINE else f"-s{values['sparsity']:g}"
    return f"{folder_label(label, portable)}{sparsity}-e{values['epochs']}-seed{values['seed']}"


def folder_label(label: str, portable: bool = False) -> str:
    """A variant's label (:func:`variant_label`) as its cells' and stacks' folder names begin:
    its "/" as "-" on every system, and on Windows also what a name cannot hold there
    (:func:`in_a_folder_name`; not with ``portable``, the name on every other system, from
    which each system's follows). Those names begin with its structure (or ``trained``) and
    end with ``-seed<N>`` (or a stack part's ``-part<i>of<n>``): never a name Windows reserves
    (``CON``, ``NUL``, ...), nor one ending in a dot or a space, which it forbids too."""
    label = label.replace("/", "-")
    return label if portable else in_a_folder_name(label)


@dataclass(frozen=True)
class Overrides:
    """A sweep command's run values, over its ``base`` (its ``--config`` file's, the flags'
    on top: :func:`lotterynet.cli.given_values`, which reads the file), and how the command
    gave each: ``in_file``, the keys only the config file (``config_file``) sets; ``flagged``,
    the flag that set each other one (``--trainer.max_epochs`` for the epochs a Trainer flag
    gave)."""

    values: dict = field(default_factory=dict)
    in_file: frozenset[str] = frozenset()
    flagged: dict[str, str] = field(default_factory=dict)
    config_file: str | None = None

    @property
    def file_values(self) -> dict:
        """The values that the ``--config`` file alone gives (no flag replaced them; devices
        that a ``--trainer.devices`` flag did are gone)."""
        return {key: self.values[key] for key in self.in_file if key in self.values}

    def spelled(self, key: str) -> str:
        """``key`` as the command gave it: the config file's key, or its flag."""
        return f"config file {self.config_file!r}: {key}" if key in self.in_file else \
            self.flagged.get(key, flag_name(key))


@dataclass(frozen=True)
class Sources:
    """Where a sweep command's values came from, to name each in the message that refuses it:
    its sweep file and ``--sweep-*`` flags (``flags``: each flag's value, None where not
    given), and its run values (``given``: the ``--config`` file's, the flags')."""

    args: argparse.Namespace
    flags: dict
    given: Overrides

    def given_in(self, key: str) -> str:
        """Where the sweep got ``key``: its flag, else the sweep file."""
        if self.flags.get(key) is not None:
            return "--baseline" if key == "baseline" else f"--sweep-{key}"
        return f"sweep file {str(Path(self.args.sweep))!r}: {key}"

    def written(self, key: str) -> list[str] | None:
        """The items of ``key``'s flag as the command wrote them; None where the file gave it."""
        text = getattr(self.args, f"sweep_{key}") if self.flags.get(key) is not None else None
        return None if text is None else [item.strip() for item in text.split(",")]


def load_sweep(args: argparse.Namespace, given: Overrides) -> Sweep:
    """The sweep file (if any), overlaid with the sweep flags; the run values ``given``
    override ``base``. Every cell is checked as a run config, and every refusal made, before
    it returns (before anything is written)."""
    data, sources = read_grid(args, given)
    check_sweep_values(data, sources.given_in, sources.written)
    refuse_missing_axes(data)
    variants = read_variants(data["variants"], sources)
    base = flatten_sections(string_keys(data.get("base", {}), "sweep base"), "sweep base")
    refuse_keys_the_sweep_sets(base, variants, sources)
    sweep = Sweep(base=overlay(base, given.values), variants=variants,
                  sparsities=[float(s) + 0.0 for s in data["sparsities"]],  # (-0.0: 0)
                  epochs=[int(e) for e in data["epochs"]], seeds=data.get("seeds") or [0],
                  baseline=data.get("baseline", True))
    configs = checked_configs(sweep, variant_sources(data["variants"], variants, sources),
                              base_source(base, sources))
    refuse_unread_options(args, given, sweep, configs)
    return sweep


def read_grid(args: argparse.Namespace, given: Overrides) -> tuple[dict, Sources]:
    """The sweep file's keys (if there is one) overlaid with the ``--sweep-*`` flags given, and
    where each came from: a flag replaces the file's key whole."""
    data = read_sweep_file(args.sweep, SWEEP_KEYS) if args.sweep else {}
    flags = {"variants": parse_list(args.sweep_variants, str, "--sweep-variants"),
             "sparsities": parse_list(args.sweep_sparsities, float, "--sweep-sparsities"),
             "epochs": parse_list(args.sweep_epochs, int, "--sweep-epochs"),
             "seeds": parse_list(args.sweep_seeds, int, "--sweep-seeds"),
             "baseline": args.baseline}
    data.update({k: v for k, v in flags.items() if v is not None})
    return data, Sources(args, flags, given)


def read_sweep_file(path: str | os.PathLike, keys: tuple[str, ...]) -> dict:
    """The mapping in a sweep file, with only ``keys``."""
    data = read_yaml_mapping(path, f"sweep file {str(Path(path))!r}",
                             f"a mapping with keys {', '.join(keys)}", MAX_FILE_BYTES)
    unknown = [k for k in data if k not in keys]
    if unknown:
        raise ConfigError(f"sweep file {str(Path(path))!r}: unknown key {unknown[0]!r}; valid "
                          f"keys: {', '.join(keys)}")
    return data


def parse_list(text: str | None, kind: type, flag: str) -> list | None:
    """A comma list given on the command line, each item read as ``kind``."""
    if text is None:
        return None
    items = text.split(",")
    if not all(v.strip() for v in items):
        raise ConfigError(f"{flag} {text!r} has an empty item; give a comma list without "
                          f"blanks")
    try:
        return [kind(v) for v in items]
    except ValueError:
        raise ConfigError(f"{flag} {text!r} must be a comma list of "
                          f"{'integers' if kind is int else 'numbers'}") from None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


SWEEP_LISTS = {  # key: (test of one item, what an item must be, what an item is)
    "variants": (lambda v: (isinstance(v, str) and v) or isinstance(v, dict),
                 "structure[:activation] strings or mappings of run options", "variant"),
    "sparsities": (lambda v: _is_number(v) and 0 <= v < 1, "numbers in [0, 1)", "sparsity"),
    "epochs": (lambda v: _is_int(v) and v > 0, "positive integers", "epoch budget"),
    "seeds": (lambda v: _is_int(v) and 0 <= v <= SEED_MAX,  # (as check_seed words it)
              f"integers in [0, 2**{SEED_MAX.bit_length()})", "seed"),
}


def check_sweep_values(data: dict, given_in, written=lambda key: None) -> None:
    """Types of a merged sweep (file overlaid with flags): lists of the right items, each
    once, a boolean ``baseline``, a mapping ``base``; ``given_in(key)`` names where the sweep
    got a key (its flag, or the sweep file and the key), ``written(key)`` the items of its list
    as the command wrote them (a flag's comma list; None: a file's, named by their values), so
    that two equal items written differently are named as written (``-0.0`` and ``0``: it
    said "0.0 is listed twice"). Values are checked again as run configs."""
    for key, (valid, what, item) in SWEEP_LISTS.items():
        if key not in data:  # (a key left empty, "seeds:", is refused: it ran seed 0 alone)
            continue
        values = data[key]
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{given_in(key)} must be a non-empty list of {what}, got "
                              f"{values!r}")
        bad = [v for v in values if not valid(v)]
        if bad:
            raise ConfigError(f"{given_in(key)}: {bad[0]!r} is not valid; {key} must be {what}")
        twice = next((i for i, v in enumerate(values) if v in values[:i]), None)
        if twice is not None:  # the same cell twice would train twice into one folder
            spelled = written(key) or [repr(v) for v in values]
            first = spelled[values.index(values[twice])]
            if first == spelled[twice]:
                raise ConfigError(f"{given_in(key)}: {values[twice]!r} is listed twice")
            raise ConfigError(f"{given_in(key)}: {first} and {spelled[twice]} are the same "
                              f"{item}, listed twice")
    if not isinstance(data.get("baseline", True), bool):
        raise ConfigError(f"{given_in('baseline')} must be true or false, got "
                          f"{data['baseline']!r}")
    if not isinstance(data.get("base", {}), dict):  # (null and [] too: they ran as {})
        raise ConfigError(f"{given_in('base')} must be a mapping of run options (leave it out "
                          f"for none), got {data['base']!r}")


def refuse_missing_axes(data: dict) -> None:
    """Refuse a grid without variants, sparsities or epochs: it has no cell to run (seeds
    default to ``[0]``)."""
    for key in ("variants", "sparsities", "epochs"):
        if not data.get(key):
            raise ConfigError(f"the sweep needs {key} (sweep file or --sweep-{key})")


def read_variants(as_given: list, sources: Sources) -> list[dict]:
    """The variants as run values (``"subsetsum:identity"`` parsed, sections flattened), each
    refused where it is not ``structure[:activation]`` or sets no structure."""
    odd = next((v for v in as_given if isinstance(v, str) and v.count(":") > 1), None)
    if odd is not None:  # (it read as activation 'identity:x')
        raise ConfigError(f"{sources.given_in('variants')}: {odd!r} is not "
                          f"structure[:activation] (subsetsum:identity, wide); a mapping sets "
                          f"more ({{structure: subsetsum, activation: identity, pairs: 3}})")
    variants = [flatten_sections(string_keys(parse_variant(v), "sweep variant"),
                                 "sweep variant") for v in as_given]
    refuse_variant_without_structure(as_given, variants, sources)
    return variants


def refuse_variant_without_structure(as_given: list, variants: list[dict],
                                     sources: Sources) -> None:
    """Refuse a variant that sets no structure: it ran as the default structure, labelled
    without one (``:identity`` was told to leave its empty structure out "for its default")."""
    bare = next((written for written, v in zip(as_given, variants)
                 if v.get("structure") in (None, "")), None)
    if bare is not None:
        from .structures import STRUCTURES  # (torch: only to say what the choices are)

        raise ConfigError(f"{sources.given_in('variants')}: {bare!r} sets no structure; each "
                          f"variant sets at least its structure, one of "
                          f"{', '.join(STRUCTURES.names() + [WIDE])} (subsetsum:identity, "
                          f"wide, {{structure: dense}})")

def refuse_keys_the_sweep_sets(base: dict, variants: list[dict], sources: Sources) -> None:
    """Refuse a value that the sweep would override or drop unsaid: a key it sets in every
    cell (in the run values, the base or a variant), a W&B option in a variant, and a run
    value that a variant sets otherwise."""
    overrides = sources.given.values
    for spell, values in [(sources.given.spelled, overrides),
                          (lambda k: f"{sources.given_in('base')}: {k}", base),
                          *((lambda k: f"{sources.given_in('variants')}: {k}", v)
                            for v in variants)]:
        check_cell_keys(spell, values)
    for variant in variants:
        refuse_sweep_wide_key(variant)
    for key, value in overrides.items():
        refuse_override_a_variant_sets(key, value, variants, sources)


def refuse_sweep_wide_key(variant: dict) -> None:
    """Refuse a :data:`SWEEP_WIDE` key in a variant: the sweep sets it for all its cells."""
    key = next((k for k in SWEEP_WIDE if k in variant), None)
    if key is not None:
        raise ConfigError(f"variant {variant_label(variant)!r} sets {key}: "
                          f"{variant[key]!r}, which is the whole sweep's: W&B options say "
                          f"how cells are logged, not what they train, and a sweep's cells "
                          f"log to one W&B group beside one summary run; set it in the "
                          f"base (or {flag_name(key)})")


def refuse_override_a_variant_sets(key: str, value, variants: list[dict],
                                   sources: Sources) -> None:
    """Refuse run value ``key`` where a variant sets it otherwise: the variant's would win,
    and the flag (or the config file's key) be dropped, unsaid."""
    variant = next((v for v in variants if key in v and v[key] != value), None)
    if variant is not None:
        change = "or drop it from the config file" if key in sources.given.in_file else \
            "not the flag"
        raise ConfigError(f"{sources.given.spelled(key)} {value!r}: the sweep's variant "
                          f"{variant_label(variant)!r} sets {key}: {variant[key]!r}; change "
                          f"the variants (sweep file or --sweep-variants), {change}")


def variant_sources(as_given: list, variants: list[dict],
                    sources: Sources) -> dict[str, list[tuple[str, dict]]]:
    """The label of each variant -> ``[(where, values)]``, the variant as given: what a cell's
    refusal names where the variant's keys make it invalid."""
    return {variant_label(v): [(f"{sources.given_in('variants')}: {g!r}", v)]
            for g, v in zip(as_given, variants)}


def base_source(base: dict, sources: Sources) -> list[tuple[str, dict]]:
    """``[(where, values)]`` of the sweep file's base (less the run values that replace it;
    none where it has no base): what a cell's refusal names where no variant's keys did."""
    return [(sources.given_in("base"),
             {k: v for k, v in base.items() if k not in sources.given.values})] if base else []


def checked_configs(sweep: Sweep, parts: dict[str, list[tuple[str, dict]]],
                    in_base: list[tuple[str, dict]]) -> list[RunConfig]:
    """The config of every cell, in :meth:`Sweep.cells`'s order: every cell must be a valid
    run, in a folder of its own, before any starts. ``parts``, ``in_base``: where its values
    came from (:func:`variant_sources`, :func:`base_source`), named where one is refused."""
    say_cells_to_check(sweep)
    checked: dict[str, RunConfig] = {}
    named: dict[str, tuple[str, dict]] = {}
    runs: dict[str, tuple[str, dict]] = {}
    configs = []
    for label, values in sweep.cells():
        configs.append(cell_config(values, checked, [*parts.get(label, []), *in_base]))
        refuse_twin_cells(label, values, configs[-1], named, runs)
    return configs


def say_cells_to_check(sweep: Sweep) -> None:
    """Refuse more than :data:`MAX_CELLS` cells, and say how many are checked where that takes
    a while (:data:`CELLS_TO_SAY`)."""
    counted = (f"{sweep.size():,} cells of the sweep (variants {len(sweep.variants)} x "
               f"sparsities {len(sweep.sparsities)} x epochs {len(sweep.epochs)} x seeds "
               f"{len(sweep.seeds)}{', and the baseline' if sweep.baseline else ''})")
    if sweep.size() > MAX_CELLS:
        raise ConfigError(f"the {counted} are more than {MAX_CELLS:,}, which no sweep needs; "
                          f"give fewer variants, sparsities, epochs or seeds")
    if sweep.size() >= CELLS_TO_SAY:  # (a grid of thousands takes a while to check)
        print(f"checking the {counted}, about {sweep.size() * CELL_CHECK_SECONDS:,.0f} s",
              flush=True)


def cell_config(values: dict, checked: dict[str, RunConfig],
                sources: list[tuple[str, dict]]) -> RunConfig:
    """The cell's config; a bad value refused naming the first of ``sources`` (the variant, the
    sweep file's base) without whose keys the cell is valid. A config's checks read its
    sparsity and seed only for their ranges, which check_sweep_values has checked: the cells
    that differ in them alone are checked once, the first of them (``checked``)."""
    same = repr({k: v for k, v in values.items() if k not in ("sparsity", "seed")})
    if same in checked:
        config = copy.copy(checked[same])  # (dataclasses.replace: 10 times as long)
        config.seed = values["seed"]
        if not config.train_weights:  # (its sparsity is 0)
            config.sparsity = values["sparsity"]
        return config
    try:
        checked[same] = make_config(values)
        return checked[same]
    except ConfigError as err:
        refuse_naming_the_source(err, values, sources)
        raise


def refuse_naming_the_source(err: ConfigError, values: dict,
                             sources: list[tuple[str, dict]]) -> None:
    """Refuse ``err`` again prefixed with where the values that caused it came from: the first
    of ``sources`` without whose keys the cell is valid (none: ``err`` stands as it is)."""
    for where, part in sources:
        try:
            make_config({k: v for k, v in values.items() if k not in part})
        except ConfigError:
            continue
        raise ConfigError(f"{where}: {err}") from None


def refuse_twin_cells(label: str, values: dict, config: RunConfig,
                      named: dict[str, tuple[str, dict]],
                      runs: dict[str, tuple[str, dict]]) -> None:
    """Refuse a cell whose folder name is not a path's, or that is the same run as a cell
    before it (``runs``) or shares its folder (``named``, by :func:`one_folder_name`: on macOS
    and Windows, names that differ only in case); then note it in both. (A stack's name is
    its variant's folder label and seed, :func:`~lotterynet.sweep_cells.stack_name`, and
    every variant has a cell of each sparsity, epochs and seed: two stacks sharing a folder
    are two cells sharing one.)"""
    # (its fields' values, in the one order every config sets them: as the repr of its sorted
    # to_dict, a deep copy that took as long as the cell's checks, tells runs apart)
    name, run = cell_name(label, values), repr(canonical([*vars(config).values()]))
    check_path(f"the folder of sweep cell {describe_cell(label, values)}", name)
    if run in runs:  # a variant given twice, or spelling out a default of another (a
        raise ConfigError(f"sweep cells {describe_cell(*runs[run])} and "  # mapping's keys
                          f"{describe_cell(label, values)} are the same run; give each "
                          f"variant once")  # in any order)
    folder = one_folder_name(name)
    if folder in named:  # two cells, one folder: sparsities alike to 6 digits (:g), or
        # values alike but for '/' and '-' (a path), or on Windows ':' and '-' (folder_label),
        # or on macOS and Windows alike but for case
        twin, twin_values = named[folder]
        windows = ' or a character Windows forbids in a name (<>:"\\|?*)' \
            if sys.platform == "win32" else ""
        twin_name = cell_name(twin, twin_values)
        system, ignored = CASELESS.get(sys.platform, ("", ""))
        fix = "give sparsities that differ within 6 significant digits" if twin == label \
            else f"make the variants' values differ in more than " \
                 f"{f'{ignored} or ' if twin_name != name else ''}'/'{windows} against '-'"
        where = "" if twin_name == name else \
            f" on {system}, whose file systems ignore {ignored} ({name!r} is the same name " \
            f"there)"
        raise ConfigError(f"sweep cells {describe_cell(twin, twin_values)} and "
                          f"{describe_cell(label, values)} would share the folder "
                          f"{twin_name!r}{where}; {fix}")
    named[folder], runs[run] = (label, values), (label, values)


#: The systems whose file systems ignore case by default (macOS's APFS, Windows' NTFS): there
#: ``Data`` and ``data`` are one folder (Linux's are case-sensitive); each one's name and what
#: its file systems ignore. APFS (and HFS+) also ignore Unicode normalization: ``é`` as one
#: code point or as ``e`` and a combining accent (NFC, NFD) is one name there.
CASELESS = {"darwin": ("macOS", "case and Unicode normalization"), "win32": ("Windows", "case")}


def one_folder_name(name: str) -> str:
    """The same for folder names that are one folder here: ``name`` casefolded on the systems
    that ignore case (:data:`CASELESS`), in NFD on macOS too; ``name`` elsewhere."""
    if sys.platform == "darwin":
        name = unicodedata.normalize("NFD", name)
    return name.casefold() if sys.platform in CASELESS else name


def refuse_unread_options(args: argparse.Namespace, given: Overrides, sweep: Sweep,
                          configs: list[RunConfig]) -> None:
    """Refuse what no cell reads (a variant's key, a flag, a config file's option: it would be
    dropped unsaid), and W&B names W&B would refuse where a W&B sweep's agents run the cells
    (with --wandb)."""
    refuse_unread_variant_keys(sweep.variants, [label for label, _ in sweep.cells()], configs)
    if args.wandb_sweep:  # its agents run every cell with --wandb (and the names W&B takes)
        configs = [dataclasses.replace(config, wandb=True) for config in configs]
        for config in configs:
            check_wandb_names(config)
    refuse_unread_flags(given_flags(args), configs, "any cell of this sweep")
    if args.config:
        refuse_unread_file_options(args.config, given.file_values, configs,
                                   "any cell of this sweep")


#: From this many cells on, :func:`load_sweep` says how many it checks before it checks them,
#: each at about :data:`CELL_CHECK_SECONDS` on this project's 2-core machine (its config
#: made, validated once per variant and budget, and compared with the others': 40,000 cells
#: took 22 s on the machine loaded, where validating each cell took 47 s, or 16 s less
#: loaded): a grid of thousands is then not a silent wait.
CELLS_TO_SAY = 2000
CELL_CHECK_SECONDS = 0.0002
#: The most cells :func:`load_sweep` takes: a few axes of a thousand values multiply to
#: millions (10,000,000 cells were checked for about 2,000 s, their configs held in memory,
#: before any refusal; the paper's grids have 215).
MAX_CELLS = 100_000


def refuse_unread_variant_keys(variants: list[dict], labels: list[str],
                               configs: list[RunConfig]) -> None:
    """Refuse a key a variant sets that none of its cells reads (``dense:identity``: a dense
    layer has no activation): it would be dropped unsaid, and the variant trained twice."""
    for variant in variants:
        label = variant_label(variant)
        cells = [config for cell_label, config in zip(labels, configs) if cell_label == label]
        refuse_unread_flags(variant, cells, "its runs", spell=lambda key, value, label=label: (
            f"sweep variant {label!r} sets {key}: {value!r}, which"))


#: What a sweep sets for all its cells at once (:func:`~lotterynet.sweep_wandb.wandb_group`), so a
#: variant may not: whether and how they log to W&B (a variant that differed from another only
#: there would be the same run, trained twice).
SWEEP_WIDE = ("wandb", *WANDB_OPTIONS)

#: What a sweep decides for every cell itself, so no base, variant or flag may set it.
NOT_IN_CELLS = {
    **{key: f"it is an axis of the grid: give it in --sweep-{axis} (or the sweep file's "
            f"{axis})" for key, axis in AXES.items()},
    "train_weights": "the trained baseline is a cell of its own (baseline: true)",
    "resume": "a sweep resumes its own cells: run the same command again",
    "out": "a sweep writes its cells under --sweep-out",
    "stop_after": "a sweep runs its cells to their end (stop it and run it again to resume)",
    "overwrite": "a sweep keeps its finished cells; give another --sweep-out to run it anew",
    "progress_bar": "a sweep's cells print one line per epoch, without a bar",
}


def check_cell_keys(spell, values: dict) -> None:
    """Refuse a key the sweep sets in every cell (it would be overridden, unsaid); ``spell``
    names a key as the user gave it (a flag, ``base: KEY``)."""
    key = next((k for k in NOT_IN_CELLS  # (a flag's false is no value: --no-progress-bar)
                if values.get(k) is not None and values.get(k) is not False), None)
    if key:
        raise ConfigError(f"{spell(key)} {values[key]!r} is not for a sweep: "
                          f"{NOT_IN_CELLS[key]}")


def describe_cell(label: str, values: dict) -> str:
    return label if label == BASELINE else f"{label} at sparsity {values['sparsity']!r}"


def config_value(values: dict, key: str):
    """``key`` of the run that config ``values`` make (a sweep's base, a cell's values): its
    value there, else :class:`~lotterynet.config_schema.RunConfig`'s default."""
    return values.get(key, FIELDS[key].default)


def sweep_dir_of(sweep: Sweep, sweep_file: str | None, sweep_out: str | None) -> Path:
    """Where a sweep writes: ``--sweep-out``, else ``runs/sweep-<arch>-<sweep file's name>``
    (``grid`` for a sweep given by flags alone; the arch :func:`in_a_folder_name`)."""
    name = Path(sweep_file).stem if sweep_file else "grid"
    arch = in_a_folder_name(config_value(sweep.base, "arch"))
    return Path(sweep_out or f"runs/sweep-{arch}-{name}")


def resolved_base(sweep: Sweep) -> dict:
    """The base that :data:`SWEEP_FILE` records: ``sweep.base``, and the value every cell runs
    with of each option it computes with that no variant and no axis sets (a default, where not
    given). The sweep run again from its file then makes its cells as they ran, a later change
    of a default notwithstanding (they were refused as run with another config)."""
    checked: dict[str, RunConfig] = {}  # (one config of the cells that differ in axes alone)
    for _, values in sweep.cells():
        cell_config(values, checked, [])
    apart = {*NOT_COMPUTED, *NOT_IN_CELLS, *(key for variant in sweep.variants for key in variant)}
    first, *others = [config.to_dict() for config in checked.values()]
    return {**{key: value for key, value in first.items() if key not in apart
               and all(other[key] == value for other in others)}, **sweep.base}


def read_resolved_sweep(sweep_dir: Path) -> Sweep:
    """The grid that the sweep in ``sweep_dir`` last ran, as it wrote it there (its
    :data:`SWEEP_FILE`: :func:`dataclasses.asdict` of its :class:`Sweep`, the flags and config
    file resolved into its base): what ``--table-only --sweep-out DIR`` tabulates. A folder
    without one (not a sweep's, or one whose cells W&B agents' ``--cell`` runs wrote: they
    write none) or one that is no such grid (not JSON, cut short, edited) is refused in one
    line naming it and saying what to give instead."""
    path = sweep_dir / SWEEP_FILE
    instead = "give the sweep itself with --sweep FILE.yaml (or the --sweep-* flags) as it ran"
    if not sweep_dir.is_dir():
        raise ConfigError(f"--table-only: --sweep-out {str(sweep_dir)!r} is not a folder; give "
                          f"the folder a sweep wrote (its {SWEEP_FILE} and cells/)")
    if not path.is_file():
        which = "its cells were run by --cell, which writes none, or by an older sweep" if \
            (sweep_dir / "cells").is_dir() else "not a sweep's folder"
        raise ConfigError(f"--table-only: --sweep-out {str(sweep_dir)!r} has no {SWEEP_FILE} "
                          f"({which}); {instead}")
    data, fault = read_json_within_memory(path, resolved_sweep_fault)
    if fault:
        raise ConfigError(f"--table-only: {str(path)!r} is not a sweep's resolved grid "
                          f"({fault}); restore it, or {instead}")
    return Sweep(**data)


def resolved_sweep_fault(data) -> str | None:
    """What keeps ``data`` (a :data:`SWEEP_FILE` as read) from being the :class:`Sweep` a
    sweep wrote, or None: a mapping of exactly :data:`SWEEP_KEYS`, each as a sweep file's is
    checked, its variants mappings of run options (as resolved)."""
    if not isinstance(data, dict) or set(data) != set(SWEEP_KEYS):
        return f"not a mapping of the keys {', '.join(SWEEP_KEYS)}"
    try:
        check_sweep_values(data, lambda key: key)
    except ConfigError as err:
        return str(err)
    if not all(isinstance(variant, dict) and variant for variant in data["variants"]):
        return "variants must be mappings of run options"
    return None


#: What a name cannot hold on Windows, other than "/" (which a sweep's folder names write as
#: "-" everywhere): its reserved characters and the control characters.
WINDOWS_FORBIDDEN = re.compile(r'[<>:"\\|?*\x00-\x1f]')


def in_a_folder_name(text: str) -> str:
    """``text`` (an arch, ``timm:resnet18``; a variant's label, :func:`folder_label`) as part
    of a folder's name: on Windows each character a name there cannot hold
    (:data:`WINDOWS_FORBIDDEN`) as "-", where ``runs/timm:resnet18-…`` or a cell
    ``dense-data_dir=D:\\mnist-…`` could not be made (``\\``: a folder in another); as it is
    elsewhere, where existing runs and sweeps keep their folders (a sweep finds its cells by
    name)."""
    return WINDOWS_FORBIDDEN.sub("-", text) if sys.platform == "win32" else text


def write_wandb_sweep(sweep: Sweep, path: Path, sweep_dir: Path, yes: bool = False) -> Path:
    """A W&B grid sweep over exactly the cells of ``sweep`` (the trained baseline included):
    the sweep, resolved, goes beside it as ``<name>.cells.yaml``; the grid is one parameter,
    ``cell``, naming every cell (:func:`cell_name`, portable: the same file's agents find their
    cells on Linux, macOS and Windows), and each agent run is ``train.py --sweep <that file> --wandb
    --cell=NAME --sweep-out SWEEP_DIR``: the cell as the sweep itself runs it, in the folder
    where the sweep run here would write it (``sweep_dir``, :func:`sweep_dir_of`; so that
    running the sweep here afterwards finds the agents' cells and only draws the table);
    ``yes``: with ``--yes``, so that an agent sets aside its cell finished with another
    config (without, it is refused: an agent cannot answer). Returns the cells file. Refused
    (:class:`ConfigError`) where the file cannot go or would replace one this did not write."""
    cells_file = path.with_name(f"{path.stem}.cells.yaml")
    if not path.parent.exists():
        raise ConfigError(f"--wandb-sweep {str(path)!r}: the folder {str(path.parent)!r} does "
                          f"not exist")
    check_output_dir(path.parent, "--wandb-sweep's folder")
    for target in (path, cells_file):
        if target.is_dir() or (target.exists() and not is_wandb_sweep_file(target)):
            raise ConfigError(f"--wandb-sweep {str(path)!r}: {str(target)!r} exists and is not "
                              f"a W&B sweep file written by train.py; choose another name")
    from .checkpointing import write_text_atomic  # (torch: only once there is a file to write)
    from .data import absolute_data_dir

    def write(target: Path, data: dict) -> None:
        write_text_atomic(target, WANDB_SWEEP_MARK + dump_yaml(data, sort_keys=False))

    cells = dataclasses.asdict(sweep)
    # (agents may start in another folder)
    cells["base"]["data_dir"] = absolute_data_dir(cells["base"].get("data_dir"))
    write(cells_file, cells)
    where = {"project": sweep.base.get("wandb_project", RunConfig.wandb_project)}
    if sweep.base.get("wandb_entity"):
        where["entity"] = sweep.base["wandb_entity"]
    spec = {**where, "program": str(TRAIN_PY) if TRAIN_PY.is_file() else "train.py",
            "method": "grid",
            "metric": {"name": "test/acc", "goal": "maximize"},
            "parameters": {"cell": {"values": [cell_name(label, values, portable=True)
                                               for label, values in sweep.cells()]}},
            "command": ["${env}", "${interpreter}", "${program}", "--sweep",
                        str(cells_file.resolve()), "--wandb", "--no-progress-bar",
                        "--sweep-out", str(sweep_dir.resolve()), *["--yes"] * yes,
                        "${args}"]}
    write(path, spec)
    return cells_file


#: The script the agents run: the ``train.py`` beside this package (an editable install or a
#: checkout), named absolutely so that ``wandb agent`` may start anywhere.
TRAIN_PY = Path(__file__).resolve().parent.parent / "train.py"

#: The first line of every file :func:`write_wandb_sweep` writes: what it may replace.
WANDB_SWEEP_MARK = "# written by train.py --wandb-sweep (rewritten by the next such call)\n"


def is_wandb_sweep_file(path: Path) -> bool:
    """A file :func:`write_wandb_sweep` wrote (the sweep spec, or the cells beside it), by its
    first line: a sweep file of the user's is never taken for one, whatever it holds."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline() == WANDB_SWEEP_MARK
    except (OSError, UnicodeDecodeError):
        return False
