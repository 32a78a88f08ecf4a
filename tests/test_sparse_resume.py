"""Resuming from (model, optimizer, sparse state) checkpoints continues bit-for-bit (CPU)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sparseopt

TOTAL, SPLIT = 24, 10
ARMS = {
    "rigl_sgd": dict(
        method="rigl",
        preconditioner="sparseopt",
        ham={"alpha": 200.0, "beta": 1e-3},
        grad_renorm=True,
    ),
    "rigl_corrected_sgd": dict(
        method="rigl", preconditioner="sparseopt", regrow_scores="corrected"
    ),
    "set_adam": dict(method="set", preconditioner="none"),
    "rigl_options_sgd": dict(
        method="rigl",
        preconditioner="sparseopt",
        f_max=1.0,
        sparseopt_layers="normalized",
        scale_weight_decay=True,
        grad_clip=0.5,
    ),
    "set_wdscale_adamw": dict(method="set", preconditioner="sparseopt", scale_weight_decay=True),
    "rigl_rownorm_trace_sgd": dict(
        method="rigl", preconditioner="sparseopt", drop_scores="row_normalized", trace_rows=True
    ),
    "set_rownorm_trace_adam": dict(method="set", drop_scores="row_normalized", trace_rows=True),
}


def build(arm: str, init_seed: int, **overrides):
    torch.manual_seed(init_seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )  # fmt: skip
    if arm.endswith("adamw"):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    elif arm.endswith("adam"):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    state = sparseopt.attach(
        model,
        optimizer,
        sparsity=0.85,
        total_steps=TOTAL,
        delta_t=3,
        seed=7,
        **ARMS[arm] | overrides,
    )
    return model, optimizer, state


def batches():
    generator = torch.Generator().manual_seed(11)
    return [
        (
            torch.randn(8, 3, 8, 8, generator=generator),
            torch.randint(0, 10, (8,), generator=generator),
        )
        for _ in range(TOTAL)
    ]


def train(model, optimizer, data) -> None:
    for x, y in data:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def assert_identical(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_identical(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_identical(x, y)
    elif torch.is_tensor(a):
        assert torch.equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("arm", list(ARMS))
@pytest.mark.parametrize("state_first", [False, True], ids=["model_first", "state_first"])
def test_resume_is_bit_for_bit(arm, state_first, tmp_path):
    data = batches()
    model, optimizer, state = build(arm, init_seed=0)
    train(model, optimizer, data)

    model_a, optimizer_a, state_a = build(arm, init_seed=0)
    train(model_a, optimizer_a, data[:SPLIT])
    path = tmp_path / "checkpoint.pt"
    torch.save(
        {
            "model": model_a.state_dict(),
            "optimizer": optimizer_a.state_dict(),
            "sparse": state_a.state_dict(),
        },
        path,
    )
    del model_a, optimizer_a, state_a

    model_b, optimizer_b, state_b = build(arm, init_seed=123)
    checkpoint = torch.load(path, weights_only=True)
    if state_first:
        state_b.load_state_dict(checkpoint["sparse"])
    model_b.load_state_dict(checkpoint["model"])
    optimizer_b.load_state_dict(checkpoint["optimizer"])
    if not state_first:
        state_b.load_state_dict(checkpoint["sparse"])
    assert state_b.step == SPLIT
    train(model_b, optimizer_b, data[SPLIT:])

    assert state.last_update is not None and state.last_update.step > SPLIT
    assert_identical(model.state_dict(), model_b.state_dict())
    assert_identical(optimizer.state_dict(), optimizer_b.state_dict())
    assert_identical(state.state_dict(), state_b.state_dict())


def test_loading_a_state_with_another_config_is_refused():
    _, _, source = build("rigl_sgd", 0)
    _, _, target = build("set_adam", 0)
    with pytest.raises(ValueError, match="method: saved 'rigl' vs attached 'set'"):
        target.load_state_dict(source.state_dict())


LATER_FIELDS = ("grad_clip", "f_max", "sparseopt_layers", "scale_weight_decay")
"""Config fields the first state_dict format lacked."""
TRACE_ERA_FIELDS = ("drop_scores", "trace_rows")
"""Config fields (and the row trace) the second format lacked at first."""


def legacy(state_dict: dict, **config) -> dict:
    """`state_dict` as the first format saved it: none of the later fields in its config."""
    old = dict(state_dict, format="sparseopt.SparseState/1")
    del old["row_trace"]
    dropped = (*LATER_FIELDS, *TRACE_ERA_FIELDS)
    old["config"] = {k: v for k, v in state_dict["config"].items() if k not in dropped} | config
    return old


def test_a_state_dict_saved_before_the_row_trace_loads_with_it_empty():
    model, optimizer, source = build("set_adam", 0)
    train(model, optimizer, batches()[:4])
    saved = source.state_dict()
    del saved["row_trace"]
    saved["config"] = {k: v for k, v in saved["config"].items() if k not in TRACE_ERA_FIELDS}
    _, _, target = build("set_adam", 1)
    target.load_state_dict(saved)
    assert target.step == 4 and target.row_trace == []
    assert_identical(target.state_dict(), source.state_dict())


def test_the_row_trace_is_restored_and_continued_bit_for_bit():
    model, optimizer, source = build("rigl_rownorm_trace_sgd", 0)
    train(model, optimizer, batches()[:SPLIT])
    assert [step for step, _ in source.row_trace] == [3, 6, 9]
    _, _, target = build("rigl_rownorm_trace_sgd", 1)
    target.load_state_dict(source.state_dict())
    assert_identical(target.row_trace_state(), source.row_trace_state())


def test_a_state_dict_of_the_first_format_loads_with_the_new_settings_at_their_defaults():
    model, optimizer, source = build("set_adam", 0)
    train(model, optimizer, batches()[:4])
    _, _, target = build("set_adam", 1)
    target.load_state_dict(legacy(source.state_dict()))
    assert target.step == 4
    assert all(torch.equal(target.masks[n], source.masks[n]) for n in source.masks)


def test_a_legacy_grad_renorm_was_a_clip_at_one_and_loads_as_such():
    _, _, source = build("rigl_sgd", 0)
    saved = legacy(source.state_dict(), grad_renorm=True)
    _, _, renorm = build("rigl_sgd", 0)
    with pytest.raises(ValueError, match=r"grad_clip: saved 1\.0 vs attached None"):
        renorm.load_state_dict(saved)
    _, _, clip = build("rigl_sgd", 0, grad_renorm=False, grad_clip=1.0)
    clip.load_state_dict(saved)
    assert clip.config.grad_clip == 1.0
