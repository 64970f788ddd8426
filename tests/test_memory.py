"""The memory count of a run (:mod:`lotterynet.memory`) against a real training step's."""

import pytest
import torch
import torch.nn.functional as F
from torch._C._profiler import _EventType

from lotterynet.config import make_config
from lotterynet.memory import memory_needed
from lotterynet.models import build_model
from lotterynet.optim import optim_settings, optimizer_and_schedule
from lotterynet.stacked import StackedModel


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


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_count_is_at_most_what_real_training_steps_hold(optimizer):
    """The count, a lower bound of a training step's peak, against what FC2 subset-sum's steps
    hold at their peak on the CPU beyond the parameters, read off the CPU allocator: the
    first two steps' as a single run takes them (Lightning's order: the gradients set to None
    before the backward), and a later step's as a stack takes it (after the step), the
    optimizer's states made. Not over either, and within 10 % of the later one: 96 % of it
    with SGD (the fused kernel, whose states the count makes by hand), 100 % with Adam (whose
    step runs on the meta device too); 71 % and 89 % of the first steps', which also hold
    what the CPU quickselect of the first masks takes beside them (12 bytes an entry, an
    operation's own: not counted). Counted with what the forward saves for the backward in
    place of the step's peak, it was 84 % and 78 % of the later step's, 62 % and 69 % of the
    first ones'."""
    config = make_config(dict(arch="fc2", structure="subsetsum", optimizer=optimizer))
    spec, optim = dict(name="fc2", structure="subsetsum", sparsity=0.5), optim_settings(config)
    model = build_model(**spec)
    trainer = optimizer_and_schedule(model, optim, 1)[0]
    data = torch.Generator().manual_seed(0)

    def step(stack: bool = False) -> None:  # (the batch held through it, as a loader's)
        x, y = torch.randn(64, 1, 28, 28, generator=data), torch.randint(10, (64,), generator=data)
        loss = F.cross_entropy(model(x), y)
        if not stack:
            trainer.zero_grad()
        loss.backward()
        trainer.step()
        if stack:
            trainer.zero_grad()

    def held(*tensors: torch.Tensor) -> int:
        return sum(t.numel() * t.element_size() for t in tensors)

    first = held(*model.parameters()) + allocated_peak(lambda: (step(), step()))
    trainer.zero_grad()
    states = [t for state in trainer.state.values() for t in state.values()]
    later = held(*model.parameters(), *states) + allocated_peak(lambda: step(stack=True))
    single, stacked = (memory_needed([(spec, optim)], config, stack=stack).trained
                       for stack in (False, True))
    assert 0.5 * first <= single <= first, (single, first)
    assert 0.9 * later <= stacked <= later, (stacked, later)


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
