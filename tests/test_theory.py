"""The width calculator against the papers' own worked numbers, and the subset-sum study
against exact small cases."""

import itertools
import math
from pathlib import Path

import pytest
import torch

from lotterynet import theory

EXAMPLE_5 = (100,) * 11  # Orseau et al.: n_max = 100, ℓ = 10 (ε = δ = 0.01)


def per_target_weight(bound, **kw):
    """M_i / n_max², the quantity of Orseau et al.'s Examples 5, 6 and 32."""
    layers = theory.BOUNDS.get(bound)(EXAMPLE_5, 0.01, 0.01, **kw)
    assert len({layer.hidden for layer in layers}) == 1  # every layer of Example 5 alike
    return layers[0].hidden / 100**2


def test_orseau_example_5_and_32():
    assert 600 < per_target_weight("orseau") <= 630            # Example 5
    assert 130 < per_target_weight("orseau-recycling") <= 144  # Example 32
    assert 1e15 < per_target_weight("malach") <= 2e15          # Example 5, Malach et al.


def test_orseau_example_6_and_32_without_norm_assumption():
    # ‖W_i‖_2 ≤ w_max n_max = 100 (Example 2's worst case)
    assert 2400 < per_target_weight("orseau", spectral_norm=100) <= 2450
    assert 550 < per_target_weight("orseau-recycling", spectral_norm=100) <= 574


def test_orseau_k_matches_theorem_3_by_hand():
    eps_w = 0.01 / (math.e * 10 * 100**1.5)
    assert theory.orseau_k(EXAMPLE_5, 0.01) == pytest.approx(math.log(3 / eps_w) / math.log(1.5))

    # Π_i ‖Ŵ_i‖_2 = (10^6)^79 overflows a float; k′ does not: log_{1.5} of the same product
    deep = (10,) * 80
    by_hand = (math.log(3) + 1 + math.log(79) + 1.5 * math.log(10) + 79 * math.log(1e6)
               - math.log(0.01)) / math.log(1.5)
    assert theory.orseau_k(deep, 0.01, spectral_norm=1e6) == pytest.approx(by_hand)
    assert theory.BOUNDS.get("orseau")(deep, 0.01, 0.01, spectral_norm=1e6)[0].hidden > 1e6


def test_pensia_n_is_21_for_eps_001_c3():
    assert theory.pensia_terms(0.01, C=3) == 21
    assert theory.pensia_terms(0.01, C=2) == 14
    layers = theory.pensia((784, 500, 10), 0.01, 0.01)
    assert layers[0].hidden == 784 * 3 * math.ceil(math.log2(784 * 500 * 2 / 0.01))


def test_table_rows_for_fc2():
    rows = theory.width_table(theory.resolve_widths("fc2"), 0.01)
    assert [r["bound"] for r in rows] == theory.BOUNDS.names()
    by = {r["bound"]: r for r in rows}
    for r in rows:
        assert len(r["hidden"]) == 2 and r["ratio"] == pytest.approx(r["params"] / 397_000)
    # logarithmic bounds are orders of magnitude below the polynomial one
    assert by["pensia"]["params"] < by["orseau"]["params"] < by["malach"]["params"]
    assert by["orseau-recycling"]["params"] < by["orseau"]["params"]
    assert theory.resolve_widths("lenet5") == (400, 120, 84, 10)


def test_dacunha_counts_the_conv_kernels():
    """da Cunha et al. Thm. 1 with c_0 = 6, c_1 = 16, d = 5, ℓ = 1, ε = δ = 0.01:
    n = C c_1 ⌈log2(c_0 c_1 d² ℓ / ε)⌉ = 3 · 16 · ⌈log2(240,000)⌉ = 48 · 18 = 864; L_1 is
    5 × 5 × 6 × 864 and L_2 1 × 1 × 864 × 16 (was counted 864 · (6 + 16) = 19,008)."""
    (layer,) = theory.dacunha((6, 16), 0.01, 0.01, kernel=5)
    assert layer.hidden == 864
    assert layer.params == 143_424  # 25 · 6 · 864 + 864 · 16 = 129,600 + 13,824
    (row,) = theory.width_table((6, 16), 0.01, kernel=5)  # only da Cunha counts kernels
    assert row["bound"] == "dacunha" and row["params"] == 143_424
    assert row["ratio"] == 143_424 / 2_400  # N* = 5² · 6 · 16 (was divided by 96)
    # d = 1: 3 · 16 · ⌈log2(6 · 16 / 0.01)⌉ = 48 · 14 = 672 hidden, 672 · (6 + 16) weights
    (dense,) = theory.dacunha((6, 16), 0.01, 0.01)
    assert (dense.hidden, dense.params) == (672, 14_784)
    assert theory.target_weights((6, 16), kernel=5) == 2_400
    # the printed table's target has those 2,400 weights (its header said 96, its ratio 2,400's)
    # (the rows say which kernel they were counted with: the table reads it there)
    assert theory.format_table((6, 16), [row]).startswith(
        "target 6-16 (5 × 5 kernels): 2,400 weights")


def test_a_one_weight_target_is_one_weight():
    """The table's header said "target 1-1: 1 weights"."""
    assert theory.format_table((1, 1), theory.width_table((1, 1), 0.01)).startswith(
        "target 1-1: 1 weight\n")


def test_natale_sparser_tickets_need_wider_networks():
    dense = theory.natale((784, 500, 10), 0.01, 0.01, density=0.5)
    sparse = theory.natale((784, 500, 10), 0.01, 0.01, density=0.05)
    assert all(s.hidden > d.hidden for s, d in zip(sparse, dense))
    assert theory.natale((100, 100), 0.01, 0.01, density=0.5)  # γ′ = 1/2: Theorem 3's largest
    n = theory.natale_terms(784, 500, 2, 0.01, 0.01)
    rhs = math.log2(2 * 2 * 784 * 500 * 0.01 * n / 0.01) ** 2 / theory.binary_entropy(0.01)
    assert n >= rhs > n - 1  # the smallest integer solving Eq. (28)
    # tiny widths: the iteration from below stopped at n = 2 (a root where the log's argument
    # is under 2), whose right side is 3.2; the inequality holds from 47 on
    def right(n):
        return math.log2(max(2, 2 * 3 * 0.25 * n / 0.99)) ** 2 / theory.binary_entropy(0.25)

    n = theory.natale_terms(1, 1, 3, 0.99, 0.25)
    assert n == 47 and all(m >= right(m) for m in range(n, 10 * n)) and right(n - 1) > n - 1


@pytest.mark.parametrize("call,match", [
    (lambda: theory.resolve_widths("vgg"), r"unknown target architecture 'vgg'; valid "
                                           r"choices: fc2, fc4, lenet5"),
    (lambda: theory.resolve_widths(widths=[784]), r"at least two positive integers, got \[784\]"),
    (lambda: theory.resolve_widths("fc2", [784, 10]), r"give exactly one of arch or widths, "
                                                      r"got arch='fc2'"),  # (the CLI: flags)
    (lambda: theory.width_table((784, 10), 1.5), r"epsilon must be in \[1e-12, 1\), got 1\.5"),
    (lambda: theory.width_table((784, 10), 0.1, bounds=["lueker"]),
     r"unknown width bound 'lueker'; valid choices: dacunha, malach"),
    (lambda: theory.natale((784, 10), 0.1, 0.1, density=0.0), r"density must be in \[1e-12, 1\)"),
    # were OverflowError / "math domain error" / 10³⁰⁷ hidden units
    (lambda: theory.natale((784, 10), 0.1, 0.1, density=5e-324), r"density .* got 5e-324"),
    (lambda: theory.width_table((784, 10), 0.1, density=1e-306), r"density .* got 1e-306"),
    # γ′ = density/ρ above 1/2 is outside Theorem 3 (Corollary 1's k ≤ n/2); it gave widths
    (lambda: theory.natale((100, 100), 0.1, 0.1, density=0.6),
     r"density 0\.6 keeps γ′ = density/ρ = 0\.6 .* needs γ′ ≤ 1/2 .* at most 0\.5$"),
    (lambda: theory.width_table((100, 80), 0.1, density=0.7),
     r"γ′ = density/ρ = 0\.56 of each subset-sum block \(ρ = 1\.25\).* at most 0\.625$"),
    (lambda: theory.natale_terms(784, 10, 1, 0.1, 9 / 16),  # (γ′ = k/n, not via natale)
     r"γ′ must be in \(0, 1/2\] \(Natale et al.'s Corollary 1: k ≤ n/2\), got 0\.5625$"),
    (lambda: theory.natale((784, 10), 0.1, 0.1, c_amp=1e308),
     r"c_amp must be a positive number below 1e\+06, got 1e\+308"),
    (lambda: theory.pensia((784, 10), 0.1, 0.1, C=1e308), r"C must be .* got 1e\+308"),
    (lambda: theory.dacunha((784, 10), 0.1, 0.1, C=1e308), r"C must be .* got 1e\+308"),
    (lambda: theory.dacunha((6, 16), 0.1, 0.1, kernel=0), r"kernel must be a positive integer"),
    # the dense bounds would have printed a dense network's widths for a conv target
    (lambda: theory.width_table((6, 16), 0.1, kernel=5, bounds=["dacunha", "pensia"]),
     r"the pensia bound is for dense layers; kernel=5 is counted by dacunha only"),
    (lambda: theory.rss_study(C=1e308), r"C must be .* got 1e\+308"),
    # a misspelt constant was ignored; w_max = 0 was 'math domain error', a negative
    # spectral norm taken as 1
    (lambda: theory.width_table((784, 10), 0.1, spectral_nrom=100),
     r"unknown constant 'spectral_nrom'; valid: C, c_amp, density, f_max, spectral_norm, w_max"),
    (lambda: theory.width_table((784, 10), 0.1, w_max=0), r"w_max must be a positive finite"),
    (lambda: theory.orseau((784, 10), 0.1, 0.1, spectral_norm=-1),
     r"spectral_norm must be a positive finite number, got -1"),
    # a string was a TypeError from '<', True taken as 1
    (lambda: theory.orseau_k((784, 10), 0.1, w_max="1"),
     r"w_max must be a positive finite number, got '1'"),
    (lambda: theory.orseau_k((784, 10), 0.1, f_max=True),
     r"f_max must be a positive finite number, got True"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_subset_sums_enumerate_every_subset():
    x = torch.tensor([[0.5, -0.25, 0.125]], dtype=torch.float64)
    sums, sizes = theory.subset_sums(x)
    expected = sorted((sum(c), len(c)) for r in range(4) for c in itertools.combinations(
        x[0].tolist(), r))
    assert sorted(zip(sums[0].tolist(), sizes.tolist())) == expected


def test_covers_grid_exact_cases():
    targets = torch.linspace(-1, 1, 5, dtype=torch.float64)  # -1, -.5, 0, .5, 1
    sums = torch.tensor([[-1.0, -0.5, 0.0, 0.5, 1.0], [-1.0, -0.5, 0.0, 0.5, 0.8]],
                        dtype=torch.float64)
    assert theory.covers_grid(sums, targets, 0.1).tolist() == [True, False]
    assert theory.covers_grid(sums, targets, 0.2).tolist() == [True, True]


def test_study_probability_rises_with_n():
    study = theory.rss_study(0.1, [2, 12], trials=40, density=0.5)
    assert study["any"][0] == 0.0 and study["any"][1] > 0.8  # 4 sums cannot cover 21 targets
    assert study["fixed"][1] <= study["any"][1]  # fixed-size subsets are a subset of all
    assert study["marker_n"] == 3 * 4


def test_cli_prints_table(capsys):
    theory.main(["--widths", "784,500,10", "--epsilon", "0.01"])
    out = capsys.readouterr().out
    # the header's target as the rows were counted (dense: no kernels named)
    assert out.startswith("target 784-500-10: 397,000 weights\n") and "orseau-recycling" in out


def test_cli_help_says_which_gamma_density_is(capsys):
    """Natale et al. Thm. 3: a ticket of density γ = ργ′ keeps γ′ of each subset-sum block;
    ``--density`` is γ (``natale`` divides it by ρ), the study's is k/n."""
    with pytest.raises(SystemExit) as exit_info:
        theory.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert exit_info.value.code == 0
    assert "table: Natale et al.'s ticket density γ = ργ′" in help_text
    assert "keeps γ′ = γ/ρ of its n terms; 0.1); study: the fixed-size k/n (0.5)" in help_text
    # FC2: ρ = max(784/500, 500/10) = 50, so density 0.1 keeps γ′ = 0.1 / 50 of each block
    layers = theory.natale((784, 500, 10), 0.01, 0.01, density=0.1)
    assert layers[0].hidden == 2 * 784 * theory.natale_terms(784, 500, 2, 0.01, 0.1 / 50)


@pytest.mark.parametrize("argv, said", [
    (["--epsilon", "0"], "--epsilon must be a number in [1e-12, 1), got 0.0"),
    (["--delta", "nan"], "--delta must be"),
    (["--widths", "784"], "--widths must be at least two positive layer widths"),
    (["--widths", "20000000,10"], "layer widths of at most 10,000,000"),  # (said: positive)
    (["--widths", "784,,10"], "is not comma-separated integers"),
    (["--C", "-3"], "--C must be a positive number"),
    (["--C", "1e308"], "--C must be a positive number below 1e+06, got 1e+308"),
    (["--c-amp", "1e308"], "--c-amp must be a positive number below 1e+06, got 1e+308"),
    (["--density", "1e-306"], "--density must be a number in [1e-12, 1), got 1e-306"),
    (["--density", "5e-324"], "--density must be a number in [1e-12, 1), got 5e-324"),
    (["--density", "1e-300"], "--density must be"),  # printed 8e+307 hidden units
    (["--widths", "100,100", "--density", "0.6"], "needs γ′ ≤ 1/2"),  # printed its widths
    (["study", "--C", "1e308", "--n-max", "3", "--trials", "1"], "--C must be"),
    (["--arch", "fc4", "--widths", "784,500,10"], "give exactly one of --arch or --widths, "
                                                  "got --arch='fc4'"),
    (["study", "--trials", "0"], "--trials must be in [1, 10000]"),
    (["study", "--n-max", "2", "--epsilon", "1e-6"], "give fewer --trials"),
    (["study", "--out", "/sys/lotterynet-test.png"], "--out '/sys' is not writable"),
    (["study", "--out", "study.txt"], "must name a .png file"),
    # options the command does not read (were ignored)
    (["study", "--arch", "fc4"], "--arch is not read by study; it reads --C, --density, "
                                 "--epsilon, --n-max, --out, --trials"),
    (["--trials", "5"], "--trials is not read by table; it reads --C, --arch, --c-amp"),
    (["table", "--out", "t.png"], "--out is not read by table"),
])
def test_cli_refuses_bad_values_in_one_line_before_computing(argv, said, capsys):
    """Not a traceback, nor a 0 silently read as the default (``--epsilon 0`` printed the
    table for 0.01), nor a failure to write the figure after the whole study."""
    with pytest.raises(SystemExit) as exit_info:
        theory.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and said in err, err


def test_the_study_figure_leaves_the_callers_matplotlib_backend_as_it_was(tmp_path, pdf_backend):
    """plot_study called ``matplotlib.use("Agg")``: called in-process (a notebook), it switched
    its caller's backend for the whole process. It draws on a Figure of its own."""
    import matplotlib

    study = {"n": [2, 4], "any": [0.0, 1.0], "fixed": [0.0, 0.5], "density": 0.5,
             "marker_n": 3, "C": 1.0, "epsilon": 0.1, "trials": 2}
    theory.plot_study(study, str(tmp_path / "study.png"))
    assert matplotlib.get_backend() == pdf_backend
    assert (tmp_path / "study.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("sent, code, said", [("SIGTERM", 143, "SIGTERM"),
                                              ("SIGINT", 130, "Ctrl-C (SIGINT)")])
def test_a_study_stopped_as_it_writes_its_figure_is_one_line_and_leaves_no_part(
        sent, code, said, tmp_path, capsys, monkeypatch):
    """``theory study`` (~30 s at its defaults) stopped by Ctrl-C was a KeyboardInterrupt
    traceback, and SIGTERM killed it without a word, leaving the figure's temporary file
    (``.fig.png.tmp<pid>``) beside it: each is one line, exit 130 / 143, as ``approximate``'s,
    and nothing of the figure is left."""
    import os
    import signal

    from matplotlib.figure import Figure

    def savefig(self, fname, **kwargs):  # (a stop half way through the write)
        Path(fname).write_bytes(b"part of a figure")
        if sent == "SIGINT":
            raise KeyboardInterrupt
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):  # (would end pytest)
            pytest.fail("no SIGTERM handler while the figure is written: the signal kills")
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Figure, "savefig", savefig)
    out = tmp_path / "fig.png"
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as exit_info:
            theory.main(["study", "--n-max", "3", "--trials", "1", "--out", str(out)])
    finally:  # (the command's handler stays on its way out)
        signal.signal(signal.SIGTERM, previous)
    err = capsys.readouterr().err
    assert exit_info.value.code == code and err.splitlines() == [
        f"python -m lotterynet.theory: error: stopped by {said}; --out {str(out)!r} is "
        f"written whole or not at all: run the same command again"], err
    assert list(tmp_path.iterdir()) == []


def test_a_study_into_a_folder_named_like_a_png_says_it_is_a_folder(tmp_path, capsys):
    """``--out runs/fig.png`` where that is a folder said "must name a .png file", which it
    does: the line says it is a folder, and the file to name instead."""
    folder = tmp_path / "fig.png"
    folder.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        theory.main(["study", "--n-max", "3", "--trials", "1", "--out", str(folder)])
    assert exit_info.value.code == 2 and capsys.readouterr().err.splitlines() == [
        f"python -m lotterynet.theory: error: --out {str(folder)!r} is a folder; it must name "
        f"a .png file, e.g. {str(folder / 'rss_study.png')!r}"]
    assert list(folder.iterdir()) == []
