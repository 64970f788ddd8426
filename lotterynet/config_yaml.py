"""YAML as a run's options are written in it: :class:`ConfigLoader` (PyYAML's safe loader,
refusing a key given twice and a document its aliases expand past
:attr:`~ConfigLoader.MAX_VALUES` values, and reading ``1e-3`` as a number) and
:class:`ConfigDumper` (:func:`dump_yaml`), whose YAML it reads back; the mapping in a YAML file,
its faults said in one line (:func:`read_yaml_mapping`, :func:`yaml_fault`), refused unread over
a size (:func:`refuse_larger_than`); a mapping's keys read as field names (:func:`string_keys`)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

from .config_schema import FIELDS
from .errors import ConfigError, in_binary_units
from .machine import read_text_within_memory

#: The largest config or sweep file read, in bytes: PyYAML's pure-Python parser reads about
#: 20,000 values a second (a 3 MB file of them took 23 s to be refused for holding more than
#: :attr:`ConfigLoader.MAX_VALUES`; one just under this cap, 100,000 values, takes 5 s, 95 % of
#: it in the parser), and the longest file in ``configs/`` is 1.3 KB. Its C parser (libyaml),
#: 5 times faster, is not used: it words its errors otherwise, and it composes nested nodes by
#: C recursion, so 40,000 nested ``[`` (80 KB) end the process with a segmentation fault where
#: the pure one raises RecursionError (refused in one line). A stack file, which lotterynet
#: writes and which grows with its members, is not bound.
MAX_FILE_BYTES = 256 * 2**10


def expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """The values under a composed YAML ``node`` with every alias written out, counted
    without writing them out (``sizes``: the count of each node already counted)."""
    if id(node) not in sizes:
        children = node.value if isinstance(node, yaml.SequenceNode) else \
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else []
        sizes[id(node)] = 1 + sum(expanded_size(child, sizes) for child in children)
    return sizes[id(node)]


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that gives one key twice (the last would win
    unsaid) and a document whose aliases expand it past :attr:`MAX_VALUES` values (a few
    hundred bytes of ``*name`` can stand for billions, which every later step would walk)."""

    MAX_VALUES = 100_000

    def construct_document(self, node):
        sizes: dict[int, int] = {}  # (one entry per value the text writes)
        if expanded_size(node, sizes) > self.MAX_VALUES:
            many = "it holds" if len(sizes) > self.MAX_VALUES else \
                "its aliases (*name) expand it to"
            raise yaml.constructor.ConstructorError(
                None, None, f"{many} more than {self.MAX_VALUES:,} values; no option needs "
                f"that", node.start_mark)
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        """The mapping; one that gives a key twice is refused at the second (its line: the
        mapping's own, its first line, was named), naming the first's line."""
        first = {}
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                earlier = first.setdefault((key.tag, key.value), key)
                if earlier is not key:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key.value!r} is given twice (first on line "
                        f"{earlier.start_mark.line + 1})", key.start_mark)
        return super().construct_mapping(node, deep)


class ConfigDumper(yaml.SafeDumper):
    """PyYAML's safe dumper, quoting the strings :class:`ConfigLoader` reads as numbers: a
    folder or W&B name ``1e3`` printed bare came back as the number 1000.0 (refused)."""


# YAML 1.1 reads a float with an exponent only with a dot and a signed exponent: 1e-3, 5E-4
# and 1.0e6 were strings (a refused lr); as YAML 1.2 and LightningCLI they are numbers.
EXPONENT_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT, list("-+0123456789"))
ConfigDumper.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT, list("-+0123456789"))


def dump_yaml(data, **options) -> str:
    """``data`` as YAML that :class:`ConfigLoader` reads back as ``data``."""
    return yaml.dump(data, Dumper=ConfigDumper, **options)


def yaml_fault(err: yaml.YAMLError) -> str:
    """What is wrong in a YAML text, in one line: where (``line L, column C``, 1-based) and
    what the parser found there, with what it was reading (``while parsing a flow mapping``)."""
    mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
    if mark is None or not problem:
        return str(err).splitlines()[0]
    context = getattr(err, "context", None)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" + (
        f" ({context})" if context else "")


def refuse_larger_than(path: Path, where: str, max_bytes: int,
                       kind: str = "a config or sweep file") -> None:
    """:class:`ConfigError` where the file ``path`` (``where`` names it, ``kind`` says what it
    is) is larger than ``max_bytes`` (:data:`MAX_FILE_BYTES`: what parsing it would cost);
    refused unread. OSError where it cannot be examined."""
    if (size := path.stat().st_size) > max_bytes:
        raise ConfigError(f"{where} is {in_binary_units(size)}, more than the "
                          f"{in_binary_units(max_bytes)} {kind} may be; no option needs that")


def read_yaml_mapping(path: str | Path, where: str, holds: str,
                      max_bytes: int | None = None) -> dict:
    """The mapping in the YAML file ``path`` (``where`` names it in errors, ``holds`` says what
    it should hold); :class:`ConfigError` for a missing, unreadable, malformed or non-mapping
    file, and one over ``max_bytes`` (refused unread)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{where} is a folder; give the file in it")
    if not path.is_file():  # (a pipe, --config <(...), was 'not found'; a FIFO without a
        # writer would hang the read, /dev/zero fill the memory)
        raise ConfigError(f"{where} is not a regular file (a pipe, a device or a socket); "
                          f"save the YAML in a file and give that" if path.exists()
                          else f"{where} not found")
    if max_bytes is not None:
        refuse_larger_than(path, where, max_bytes)
    try:
        # (UTF-8, YAML's own: the locale's, cp1252 on Windows, read a config's 'é' as 'Ã©',
        # and an ASCII locale refused it)
        data = yaml.load(read_text_within_memory(path, where), Loader=ConfigLoader)
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{where} cannot be read as text: "
                          f"{getattr(err, 'strerror', None) or err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{where} is not valid YAML: {yaml_fault(err)}") from None
    except RecursionError:  # PyYAML recurses once per level of nesting
        raise ConfigError(f"{where} nests too deep to read (the YAML reader hit Python's "
                          f"recursion limit, {sys.getrecursionlimit()}); no option needs "
                          f"that") from None
    if data is None:  # an empty file, or comments only
        return {}
    if not isinstance(data, dict):  # ([] and false too: they were read as an empty file)
        raise ConfigError(f"{where} must hold {holds}")
    return data


def string_keys(data: dict, where: str) -> dict:
    """``data`` with ``-`` in its keys read as ``_``; every key must be a string."""
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(f"{where}: key {key!r} is not a string; valid keys: "
                              f"{', '.join(FIELDS)}")
    keys = [k.replace("-", "_") for k in data]
    twice = next((k for i, k in enumerate(keys) if k in keys[:i]), None)
    if twice:
        raise ConfigError(f"{where}: {twice} is given twice (spelt with - and with _); give it "
                          f"once")
    return dict(zip(keys, data.values()))
