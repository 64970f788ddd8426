"""The memory count of a run (:mod:`lotterynet.memory`) against a real training step's."""

import pytest
import torch
import torch.nn.functional as F
from torch._C._profiler import _EventType

from lotterynet.config import make_config
from lotterynet.errors import ConfigError
from lotterynet.masking import MaskedWeight
from lotterynet.memory import memory_needed, selection_scratch
from lotterynet.models import build_model
from lotterynet.optim import optim_settings, optimizer_and_schedule
from lotterynet.stack_model import StackedModel


def allocated_peak(run) -> int:
    """The most bytes the CPU allocator holds at once while ``run()`` runs beyond what it held
    before, of those it allocates there (its own running total, as torch.profiler records it;
    a block allocated before that ``run`` frees is not subtracted)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as profile:
        run()
    events, allocations = list(profile.profiler.kineto_results.experimental_event_tree()), []
    while events:
        event = events.pop()
        events.extend(event.children)
        if event.tag == _EventType.Allocation:
            allocations.append((event.start_time_ns, event.extra_fields))
    first = min(allocations, key=lambda a: a[0])[1]  # (the total counts earlier runs' too)
    return max(a.total_allocated for _, a in allocations) - first.total_allocated + \
        first.alloc_size


def first_steps_peak(spec: dict, optim: dict, stack: bool) -> int:
    """The most bytes that a model of ``spec`` and its parameters hold in its first two
    training steps with the optimizer of ``optim`` on the CPU (:func:`allocated_peak`): its
    gradients set to None before the backward, as Lightning does, or after the step, as a
    ``stack`` does."""
    model = build_model(**spec)
    trainer = optimizer_and_schedule(model, optim, 1)[0]
    data = torch.Generator().manual_seed(0)

    def step() -> None:  # (the batch held through it, as a loader's)
        x, y = torch.randn(64, 1, 28, 28, generator=data), torch.randint(10, (64,), generator=data)
        loss = F.cross_entropy(model(x), y)
        if not stack:
            trainer.zero_grad()
        loss.backward()
        trainer.step()
        if stack:
            trainer.zero_grad()

    return sum(p.numel() * p.element_size() for p in model.parameters()) + \
        allocated_peak(lambda: (step(), step()))


@pytest.mark.parametrize("structure, optimizer, low", [("dense", "sgd", 0.98),
                                                      ("subsetsum", "sgd", 0.7),
                                                      ("subsetsum", "adam", 0.85)])
def test_the_count_is_at_most_what_real_training_steps_hold(structure, optimizer, low):
    """The count, a lower bound of a training step's peak, against what FC2's first two steps
    hold at their peak on the CPU, read off the CPU allocator, as a single run takes them
    (Lightning's order: the gradients set to None before the backward) and as a stack takes
    them (after the step). Not over either. The first masks are selected by a quickselect
    over each whole tensor (no threshold hint yet: a copy of the magnitudes and an int64
    index each, 12 bytes an entry), the second near the hint (9 bytes an entry); the count
    held neither: dense FC2 with SGD counted 83 % and 96 % of them, now all (98 % asked).
    Subset-sum with SGD (the fused kernel, whose states the count makes by hand) and Adam
    (whose step runs on the meta device too): 86 % and 74 %, 92 % and 95 % (71 % and 71 %,
    89 % and 95 % before): their first mask of 1.96M scores has scores tied at its cut-off,
    not all of which fit, whose ranking takes 16 bytes an entry more (not counted: it
    depends on the scores)."""
    config = make_config(dict(arch="fc2", structure=structure, optimizer=optimizer))
    spec, optim = dict(name="fc2", structure=structure, sparsity=0.5), optim_settings(config)
    for stack in (False, True):
        peak = first_steps_peak(spec, optim, stack)
        count = memory_needed([(spec, optim)], config, stack=stack).trained
        assert low * peak <= count <= peak, (stack, count, peak)


@pytest.mark.parametrize("shape, groups, dtype, ties", [
    ((256, 256), None, torch.bfloat16, "low"), ((256, 256), None, torch.bfloat16, "high"),
    ((64, 32, 32), 8, torch.bfloat16, "low"), ((256, 256), None, torch.float32, "low")])
def test_a_first_masks_count_holds_the_ranking_of_ties_where_they_are_all_but_certain(
        shape, groups, dtype, ties):
    """A first mask whose scores tie at its cut-off, not all of them kept, ranks them over the
    whole tensor after its quickselect (``cut_at``: 10 bytes an entry more); the count held
    the quickselect's scratch only: 12 of the 22 bytes an entry that a bfloat16 tensor's
    selection holds (65,536 scores, 128 ties expected), 13 of 23 with ``ties="high"``. Now
    the count is what the selection holds, groups of 8 too (their thresholds and counts:
    23.25 bytes an entry), and still the quickselect's where ties are not expected (float32:
    0.008; the mask has none to rank)."""
    torch.manual_seed(0)
    weight = MaskedWeight(shape, fan_in=256, sparsity=0.5, ties=ties,
                          group_dim=None if groups is None else 2, group_size=groups).to(dtype)
    peak = allocated_peak(lambda: weight.mask(dtype))  # (training: the scores require grad)
    count = selection_scratch(weight, dtype, hinted=False)
    assert 0.99 * peak <= count <= peak, (count / weight.weight.numel(), peak)


def test_a_stacks_count_holds_the_frozen_tensors_its_members_share_once():
    """A stack makes its members' equal frozen tensors one (``share_frozen``); the count held
    them once per member: two FC2 subset-sum members of one seed, 7.6 MiB over all that the
    stack's parameters take, which it now counts (and each score's gradient and momentum)."""
    config = make_config(dict(arch="fc2"))
    members = [(dict(name="fc2", structure="subsetsum", sparsity=s), optim_settings(config))
               for s in (0.5, 0.9)]
    need = memory_needed(members, config, stack=True)
    stack = StackedModel([build_model(**spec) for spec, _ in members])
    held = sum(p.numel() * p.element_size() for p in stack.parameters())
    scores = sum(p.numel() * p.element_size() for p in stack.parameters() if p.requires_grad)
    assert need.shared == 1991420 and need.trained - need.step == held + 2 * scores


def cgroup_files(root):
    """``write(folder, **files)``: a fake cgroup folder under ``root`` holding ``files``, the
    underscores of each name dots but in v1's ``in_bytes`` (``memory_swap_max``:
    memory.swap.max, ``memory_limit_in_bytes``: memory.limit_in_bytes)."""
    def write(folder, **files):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (root / folder / name.replace("_", ".").replace(".in.", "_in_")).write_text(text)

    return write


def test_a_cgroups_memory_limit_is_what_a_run_has(tmp_path, monkeypatch):
    """A container's cgroup may limit its memory below what the machine has available: the
    check read only /proc/meminfo, so a run that could not fit in the cgroup was let start
    and killed. Read from the process's cgroup (``own``) and those above it, cgroup v2's and
    v1's: each limit less what the cgroup holds but its page cache (which counted the shared
    memory in it as reclaimable, which only swap frees: no longer); the least of them, and of
    what the machine has, is what a run has."""
    import lotterynet.memory

    monkeypatch.setattr(lotterynet.memory, "meminfo", lambda *keys: 0)  # (no swap)
    write = cgroup_files(tmp_path)
    own = tmp_path / "cgroup"
    own.write_text("4:memory:/docker/c1\n0::/user/run\n")
    write("memory/docker", memory_limit_in_bytes=str(2**63 - 4096), memory_usage_in_bytes="0",
          memory_stat="total_cache 0\n")  # (v1's: no limit)
    write("memory/docker/c1", memory_limit_in_bytes=str(3 * 2**30),
          memory_usage_in_bytes=str(2**30),
          memory_stat="cache 5\ntotal_cache 1024\nshmem 3\ntotal_shmem 256\n")
    write("user", memory_max=str(2**30), memory_current=str(2**29),
          memory_stat="anon 7\nfile 4096\nshmem 1024\n")
    write("user/run", memory_max="max", memory_current="0", memory_stat="file 0\n")
    assert lotterynet.memory.cgroup_memory(tmp_path, own) == 2**29 + 4096 - 1024
    (tmp_path / "user" / "memory.max").write_text("max")
    assert lotterynet.memory.cgroup_memory(tmp_path, own) == 2 * 2**30 + 1024 - 256
    own.write_text("0::/\n")
    assert lotterynet.memory.cgroup_memory(tmp_path, own) is None
    assert lotterynet.memory.cgroup_memory(tmp_path, tmp_path / "none") is None

    config = make_config(dict(arch="fc2"))
    need = memory_needed([(dict(name="fc2", structure="subsetsum", sparsity=0.5),
                           optim_settings(config))], config)
    monkeypatch.setattr(lotterynet.memory, "available_memory", lambda: 2**40)
    monkeypatch.setattr(lotterynet.memory, "cgroup_memory", lambda: 2**24)
    with pytest.raises(ConfigError, match=r"needs at least .* and this machine has 16\.0 MiB "):
        lotterynet.memory.check_fits("fc2 subsetsum", need, config)


def test_the_swap_a_cgroup_may_use_beyond_its_limit_is_room(tmp_path, monkeypatch):
    """The machine's check counts its free swap as room (the kernel pages a run out before it
    kills it), but a cgroup's room was its memory limit alone: a run that the swap its cgroup
    may use would hold was refused in a container. Its room is now its memory's and the swap
    it may still use: the machine's SwapFree (read apart from MemAvailable), or less where a
    cgroup's swap limit (v2's memory.swap.max, also of a cgroup without a memory limit) leaves
    less, or where v1's memory.memsw.limit_in_bytes (memory and swap together) does; none
    where the swappiness its reclaim uses is 0 (v2's: the machine's; v1's: its own)."""
    import lotterynet.machine
    import lotterynet.memory

    info = tmp_path / "meminfo"
    info.write_text("MemTotal: 900 kB\nMemAvailable: 100 kB\nSwapFree: 50 kB\n")
    assert lotterynet.machine.meminfo("SwapFree", path=str(info)) == 50 * 1024
    assert lotterynet.machine.meminfo("MemAvailable", "SwapFree", path=str(info)) == 150 * 1024
    assert lotterynet.machine.meminfo("Swap", path=str(info)) is None
    swap_free = 2**30
    monkeypatch.setattr(lotterynet.memory, "meminfo", lambda *keys: swap_free)
    write, own, swappiness = cgroup_files(tmp_path), tmp_path / "cgroup", tmp_path / "swappiness"
    swappiness.write_text("60\n")  # (the machine's)

    def room():
        return lotterynet.memory.cgroup_memory(tmp_path, own, swappiness)

    own.write_text("0::/user/run\n")
    write("user", memory_max=str(2**30), memory_current=str(2**29), memory_stat="file 0\n")
    write("user/run", memory_max="max", memory_current="0", memory_stat="file 0\n")
    assert room() == 2**29 + 2**30
    write("user/run", memory_swap_max=str(2**28), memory_swap_current=str(2**26))
    assert room() == 2**29 + 3 * 2**26
    write("user/run", memory_swap_max="max")
    assert room() == 2**29 + 2**30
    swappiness.write_text("0\n")  # (v2's cgroups then swap nothing)
    assert room() == 2**29
    swappiness.write_text("60\n")
    assert room() == 2**29 + 2**30
    swap_free = None  # (unknown: none counted)
    assert room() == 2**29

    swap_free = 2**30
    own.write_text("4:memory:/docker/c1\n")
    write("memory/docker/c1", memory_limit_in_bytes=str(3 * 2**30),
          memory_usage_in_bytes=str(2**30), memory_stat="total_cache 1024\ntotal_shmem 256\n")
    assert room() == 2 * 2**30 + 768 + 2**30
    write("memory/docker/c1", memory_memsw_limit_in_bytes=str(3 * 2**30 + 2**28),
          memory_memsw_usage_in_bytes=str(2**30 + 2**20))
    assert room() == 2 * 2**30 + 768 + 2**28 - 2**20
    write("memory/docker/c1", memory_swappiness="0")  # (v1's own)
    assert room() == 2 * 2**30 + 768
    write("memory/docker/c1", memory_swappiness="60")
    own.write_text("4:memory:/docker/c1\n0::/\n")
    swappiness.write_text("0\n")  # (v2's, where v1's memory controller limits: not read)
    assert room() == 2 * 2**30 + 768 + 2**28 - 2**20


@pytest.mark.parametrize("have, smaller", [(1_600_000, True), (1_500_000, False)])
def test_a_smaller_batch_is_advised_only_where_one_would_fit(monkeypatch, have, smaller):
    """A refusal named a smaller --batch-size among the remedies wherever a step's peak was
    counted, also where the weights alone leave no room for a batch of one. Dense LeNet5
    counts 1,679,832 bytes in training with a batch of 64, 1,578,528 with one: the remedy is
    named with 1,600,000 bytes available, not with 1,500,000."""
    import lotterynet.memory

    config = make_config(dict(arch="lenet5", structure="dense"))
    need = memory_needed([(dict(name="lenet5", structure="dense", sparsity=0.5),
                           optim_settings(config))], config)
    assert (need.trained, need.trained_at_one()) == (1_679_832, 1_578_528)
    monkeypatch.setattr(lotterynet.memory, "available_memory", lambda: have)
    monkeypatch.setattr(lotterynet.memory, "cgroup_memory", lambda: None)
    with pytest.raises(ConfigError) as refusal:
        lotterynet.memory.check_fits("lenet5 dense", need, config)
    assert ("--arch) or a smaller --batch-size need less" in str(refusal.value)) == smaller


def test_reusing_what_an_operation_made_counts_the_same(monkeypatch):
    """The count's steps on the meta device make again, without its meta kernel, what an
    operation made before on inputs of the same layouts (LiveStorage.run: a 70-member stack
    counted in 13-19 s, now 6-7 s on the 2 shared cores): the counts, at the batch and at a
    batch of one, of a run and of a 3-member stack (members of one shape: most operations
    made again) are those of every operation run."""
    import lotterynet.memory

    config = make_config(dict(arch="fc2", optimizer="adam", precision="bf16-mixed"))
    members = [(dict(name="fc2", structure="dense", sparsity=s), optim_settings(config))
               for s in (0.3, 0.5, 0.7)]

    def counts():
        return [(need.trained, need.trained_at_one()) for need in (
            memory_needed(members[:1], config), memory_needed(members, config, stack=True))]

    reused = counts()
    monkeypatch.setattr(lotterynet.memory.LiveStorage, "run",
                        lambda self, func, args, kwargs: func(*args, **kwargs))
    assert reused == counts()


@pytest.mark.parametrize("input_format, weight_format", [
    (torch.channels_last, torch.contiguous_format), (torch.contiguous_format, torch.channels_last),
    (torch.contiguous_format, torch.contiguous_format)])
def test_a_convolution_is_laid_out_and_counted_on_meta_as_on_the_cpu(input_format, weight_format):
    """On the CPU a convolution's output is channels-last where its input or its weight is (a
    malach layer's input, the permuted output of the einsum before it); the meta kernel's was
    not, so the einsum after it, whose reshape of the permuted output is a view on the CPU,
    copied it on meta alone: conv2 malach --hidden 1024 counted 1,287,901,704 bytes against
    the 1,274,794,504 its first two steps hold (its hidden units' copy held for the
    backward), now exactly those. Here a convolution's output, twice (the second made again
    from the first: ``LiveStorage.run``), each held with its reshape as an einsum makes it:
    their strides, and the bytes held, as on the CPU."""
    import lotterynet.memory

    def layers(device: str) -> list[torch.Tensor]:
        x = torch.empty(4, 8, 6, 6, device=device, memory_format=input_format)
        w = torch.empty(16, 8, 3, 3, device=device, memory_format=weight_format)
        return [t for out in (F.conv2d(x, w, padding=1) for _ in "12")
                for t in (out, out.permute(0, 2, 3, 1).reshape(-1, 16))]

    with lotterynet.memory.LiveStorage(torch.float32, set()) as live:
        on_meta = layers("meta")
    on_cpu = layers("cpu")
    held = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in on_cpu}
    assert [t.stride() for t in on_meta] == [t.stride() for t in on_cpu]
    assert live.live == sum(held.values())


def meta(*shape: int) -> torch.Tensor:
    return torch.empty(shape, device="meta")


@pytest.mark.parametrize("calls", [
    lambda: [torch.ops.aten._unsafe_view(a, (512,)) for a in [meta(16, 32)] for _ in "12"],
    lambda: [a.reshape(-1) for a in [meta(32, 16).t()] for _ in "12"],
    lambda: [a.transpose(1, 2) @ b for a, b in [(meta(4, 16, 32), meta(16, 8))] for _ in "12"],
    lambda: [meta(3).long() + x for x in (1, 1.0, True)],
    lambda: [torch.full((3,), x, device="meta") for x in (1, 1.0)],
    lambda: [torch.arange(x, device="meta") for x in (5, 5.0)],
    lambda: [torch.zeros((), device=d).add_(1) for d in ("meta", "cpu")],
    lambda: [torch.ones(3, device=d) * 2 for d in ("meta", "cpu")],
], ids=["unsafe_view", "reshape of t()", "matmul of a transposed 3-D tensor", "1 then 1.0",
        "full of 1 then of 1.0", "arange(5) then arange(5.0)", "add_ on the CPU after meta",
        "mul on the CPU after meta"])
def test_an_operation_made_again_gives_what_it_gives_when_run(monkeypatch, calls):
    """LiveStorage.run made again what an operation made before on meta inputs of the same
    layouts, also where that was not what the operation gives: an alias that the operation's
    schema does not mark (``_unsafe_view``, as reshape and matmul call it) counted as new
    memory again (the peak of a reshape of a transposed tensor 8192 bytes, not 6144), ``1``,
    ``1.0`` and ``True`` taken as one argument (``a + 1.0`` of int64 gave int64), and a CPU
    operation after the same on meta skipped (its value unchanged) or given a meta tensor.
    Each now gives the tensors (their dtypes, devices, shapes and the CPU's values), the live
    bytes and their peak of every operation run."""
    import lotterynet.memory

    def run():
        with lotterynet.memory.LiveStorage(torch.float32, set()) as live:
            out = calls()
        return live.live, live.peak, [(t.dtype, t.device, t.shape, None if t.is_meta else
                                       t.tolist()) for t in out]

    reused = run()
    monkeypatch.setattr(lotterynet.memory.LiveStorage, "run",
                        lambda self, func, args, kwargs: func(*args, **kwargs))
    assert reused == run()
