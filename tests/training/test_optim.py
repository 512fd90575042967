from __future__ import annotations

import pytest
import torch
from torch import Tensor

from lmcli.config import ModelConfig, TrainConfig
from lmcli.errors import ConfigError
from lmcli.models import build_model
from lmcli.training.optim import (
    NS_COEFFICIENTS,
    MuonAdamW,
    build_optimizer,
    orthogonalize,
    shape_scale,
    token_table,
)


def textbook_newton_schulz(g: Tensor, steps: int = 5) -> Tensor:
    """The iteration as usually written: X <- (a I + b A + c A^2) X with A = X X^T."""
    a, b, c = NS_COEFFICIENTS
    x = g if g.size(0) <= g.size(1) else g.mT
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x if g.size(0) <= g.size(1) else x.mT


def test_orthogonalize_equals_the_textbook_iteration_for_every_shape() -> None:
    torch.manual_seed(0)
    shapes = [(96, 288), (288, 96), (96, 96), (384, 96), (32, 48), (48, 32), (7, 5)]
    mats = [torch.randn(s) for s in shapes]
    # One call with mixed shapes: matrices sharing their small side are batched together.
    for got, g in zip(orthogonalize(mats), mats, strict=True):
        assert got.shape == g.shape and got.dtype == g.dtype
        torch.testing.assert_close(got, textbook_newton_schulz(g), rtol=1e-4, atol=2e-5)


def test_orthogonalize_lands_near_the_polar_factor() -> None:
    torch.manual_seed(0)
    g = torch.randn(64, 256)
    (x,) = orthogonalize([g])
    singular = torch.linalg.svdvals(x)
    # Five quintic steps put every singular value of a random matrix in roughly [0.7, 1.2].
    assert singular.min() > 0.6 and singular.max() < 1.25
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    polar = u @ vh
    cosine = (x * polar).sum() / (x.norm() * polar.norm())
    assert cosine > 0.95


def tiny_model(model: str = "transformer") -> torch.nn.Module:
    cfg = ModelConfig(vocab_size=40, layers=2, width=32, heads=2, context=16, model=model)
    return build_model(cfg)


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest() -> None:
    model = tiny_model()
    opt = build_optimizer(model, TrainConfig(optimizer="muon"), torch.device("cpu"))
    assert isinstance(opt, MuonAdamW)
    kinds = {id(p): g["kind"] for g in opt.param_groups for p in g["params"]}
    assert len(kinds) == len(list(model.parameters()))  # every parameter exactly once
    assert kinds[id(model.wte.weight)] == "adamw"  # the (tied) embedding and head
    for block in model.blocks:
        for matrix in (block.attn.qkv.weight, block.attn.proj.weight, block.mlp.fc.weight):
            assert kinds[id(matrix)] == "muon"
        assert kinds[id(block.norm1.weight)] == "adamw"


@pytest.mark.parametrize("model", ["transformer", "lstm"])
@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_both_optimizers_fit_a_fixed_batch(model: str, optimizer: str) -> None:
    torch.manual_seed(0)
    net = tiny_model(model)
    cfg = TrainConfig(optimizer=optimizer, lr=1e-2, muon_lr=0.02)
    opt = build_optimizer(net, cfg, torch.device("cpu"))
    x = torch.randint(0, 40, (4, 16))
    first = last = None
    for _ in range(60):
        for group in opt.param_groups:
            group["lr"] = cfg.lr * group["lr_scale"]
        _, loss = net(x, x)  # predict the token itself: learnable by every model
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
        last = loss.item()
    assert first is not None and last is not None and last < 0.5 * first


def test_muon_state_round_trips() -> None:
    torch.manual_seed(0)
    net = tiny_model()
    opt = build_optimizer(net, TrainConfig(optimizer="muon"), torch.device("cpu"))
    _, loss = net(torch.randint(0, 40, (2, 16)), torch.randint(0, 40, (2, 16)))
    loss.backward()
    opt.step()
    again = build_optimizer(net, TrainConfig(optimizer="muon"), torch.device("cpu"))
    again.load_state_dict(opt.state_dict())
    for p in net.parameters():
        for key, value in opt.state[p].items():
            assert torch.equal(value, again.state[p][key])


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
@pytest.mark.parametrize(("model", "tie"), [("transformer", False), ("transformer", True),
                                            ("lstm", False)])  # fmt: skip
def test_embedding_lr_gives_the_token_table_a_rate_of_its_own(
    optimizer: str, model: str, tie: bool
) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=40, layers=2, width=32, heads=2, context=16, model=model, tie=tie)
    net = build_model(cfg)
    # no weight decay: AdamW decays the table (Muon's AdamW groups do not), which would blur
    # the rate this measures
    train_cfg = TrainConfig(optimizer=optimizer, lr=1e-3, embedding_lr=5e-2, weight_decay=0.0)
    opt = build_optimizer(net, train_cfg, torch.device("cpu"))
    table = token_table(net)
    groups = [g for g in opt.param_groups if any(p is table for p in g["params"])]
    assert len(groups) == 1 and len(groups[0]["params"]) == 1
    assert groups[0]["lr_scale"] == pytest.approx(50.0)
    owners = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(owners) == sorted(id(p) for p in net.parameters())  # each exactly once
    assert all(g["lr_scale"] == 1.0 for g in opt.param_groups if g is not groups[0]
               and g.get("kind") != "muon")  # fmt: skip

    # Adam's first update is lr * g / |g| per entry: the table moves by its own rate, a norm's
    # gain (or the LSTM's biases) by --lr.
    for group in opt.param_groups:
        group["lr"] = train_cfg.lr * group["lr_scale"]
    before = {id(p): p.detach().clone() for p in net.parameters()}
    x = torch.randint(0, 10, (4, 16))
    _, loss = net(x, x)
    loss.backward()
    opt.step()
    moved = (table.detach() - before[id(table)]).abs()
    torch.testing.assert_close(moved.max(), torch.tensor(5e-2), rtol=1e-2, atol=0.0)
    if not tie:  # rows of tokens never seen have no gradient: they stay
        assert torch.equal(moved[10:], torch.zeros_like(moved[10:]))
    vectors = [p for p in net.parameters() if p.dim() == 1]
    largest = max((p.detach() - before[id(p)]).abs().max() for p in vectors)
    torch.testing.assert_close(largest, torch.tensor(1e-3), rtol=1e-2, atol=0.0)


def test_shape_scale_rules() -> None:
    # tall: only a matrix with more rows than columns is scaled up
    assert shape_scale(384, 96, "tall") == pytest.approx(2.0)
    assert shape_scale(96, 384, "tall") == 1.0 and shape_scale(96, 96, "tall") == 1.0
    # aspect: tall and wide alike, so each entry's RMS is 1/sqrt(short side)
    assert shape_scale(96, 384, "aspect") == pytest.approx(2.0)
    assert shape_scale(288, 96, "aspect") == pytest.approx(3**0.5)
    assert shape_scale(96, 96, "aspect") == 1.0
    # the exact orthogonal update (U V^T): every entry of a wide and a tall one moves by the
    # same RMS under aspect, 1/sqrt(96)
    for shape in ((96, 384), (288, 96)):
        u, _, vh = torch.linalg.svd(torch.randn(shape, dtype=torch.float64), full_matrices=False)
        rms = (u @ vh * shape_scale(*shape, "aspect")).pow(2).mean().sqrt()
        assert float(rms) == pytest.approx(96**-0.5, rel=1e-9)


@pytest.mark.parametrize("rule", ["tall", "aspect"])
def test_muon_scale_sets_how_far_a_wide_matrix_moves(rule: str) -> None:
    """One Muon step from the same gradient: --muon-scale aspect moves the MLP's wide output
    projection (width x 4 width) twice as far as tall does; the tall matrices the same."""
    steps: dict[str, dict[str, Tensor]] = {}
    for each in ("tall", rule):
        torch.manual_seed(0)
        net = tiny_model()
        cfg = TrainConfig(optimizer="muon", weight_decay=0.0, muon_scale=each)
        opt = build_optimizer(net, cfg, torch.device("cpu"))
        for group in opt.param_groups:
            group["lr"] = cfg.lr * group["lr_scale"]
        block = net.blocks[0]
        watched = {"wide": block.mlp.proj.weight, "tall": block.mlp.fc.weight}
        before = {k: p.detach().clone() for k, p in watched.items()}
        x = torch.randint(0, 40, (4, 16))
        _, loss = net(x, x)
        loss.backward()
        opt.step()
        steps[each] = {k: (p.detach() - before[k]).norm() for k, p in watched.items()}
    assert block.mlp.proj.weight.shape == (32, 128)  # wide: (out, in) with out < in
    factor = 2.0 if rule == "aspect" else 1.0
    torch.testing.assert_close(steps[rule]["wide"], factor * steps["tall"]["wide"])
    torch.testing.assert_close(steps[rule]["tall"], steps["tall"]["tall"])


def test_unknown_optimizer_and_bad_muon_lr_are_refused() -> None:
    with pytest.raises(ConfigError, match="--optimizer"):
        TrainConfig(optimizer="sgd").validate()
    with pytest.raises(ConfigError, match="--muon-lr"):
        TrainConfig(muon_lr=0.0).validate()
    with pytest.raises(ConfigError, match="--muon-scale must be one of tall, aspect"):
        TrainConfig(muon_scale="fan").validate()
    with pytest.raises(ConfigError, match="--embedding-lr must be positive"):
        TrainConfig(embedding_lr=0.0).validate()
    with pytest.raises(ConfigError, match="--embedding-lr must be a finite number"):
        TrainConfig(embedding_lr=float("nan")).validate()


def two_copies() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    first, second = tiny_model(), tiny_model()
    second.load_state_dict(first.state_dict())
    return first, second


def give_gradients(nets: tuple[torch.nn.Module, ...], step: int) -> None:
    """The same random gradient for the same parameter of every copy."""
    for params in zip(*(net.parameters() for net in nets), strict=True):
        grad = torch.randn(params[0].shape, generator=torch.Generator().manual_seed(step))
        for p in params:
            p.grad = grad.clone()


def test_the_adamw_groups_step_as_torch_adamw_does() -> None:
    ours_net, torch_net = two_copies()
    groups = [{"params": list(ours_net.parameters()), "kind": "adamw", "lr_scale": 1.0,
               "weight_decay": 0.1}]  # fmt: skip
    ours = MuonAdamW(groups, lr=3e-3, betas=(0.9, 0.99), momentum=0.95)
    reference = torch.optim.AdamW(torch_net.parameters(), lr=3e-3, betas=(0.9, 0.99), eps=1e-8,
                                  weight_decay=0.1, foreach=False)  # fmt: skip
    for step in range(5):
        give_gradients((ours_net, torch_net), step)
        ours.step()
        reference.step()
    for a, b in zip(ours_net.parameters(), torch_net.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_muon_group_steps_as_the_written_out_rule() -> None:
    """Per matrix: buf = mu buf + g; p = p (1 - lr wd) - lr s orth(g + mu buf), s = the shape
    scale sqrt(max(1, rows / cols)); written out here tensor by tensor."""
    ours_net, ref_net = two_copies()
    lr, mu, decay = 0.02, 0.95, 0.1
    ours_params = [p for p in ours_net.parameters() if p.dim() == 2]
    ref_params = [p for p in ref_net.parameters() if p.dim() == 2]
    ours = MuonAdamW([{"params": ours_params, "kind": "muon", "lr_scale": 1.0,
                       "weight_decay": decay}], lr=lr, betas=(0.9, 0.99), momentum=mu)  # fmt: skip
    bufs = [torch.zeros_like(p) for p in ref_params]
    for step in range(3):
        give_gradients((ours_net, ref_net), step)
        ours.step()
        with torch.no_grad():
            for p, buf in zip(ref_params, bufs, strict=True):
                assert p.grad is not None
                buf.mul_(mu).add_(p.grad)
                (update,) = orthogonalize([p.grad + mu * buf])
                scale = max(1.0, p.size(0) / p.size(1)) ** 0.5
                p.mul_(1 - lr * decay).sub_(lr * scale * update)
    for a, b in zip(ours_params, ref_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
