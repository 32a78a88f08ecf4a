"""Training-step overhead of sparseopt's optimizer hooks on ResNet-20 or ResNet-50.

`--model resnet20`: CIFAR-100 shapes, fp32. `--model resnet50`: ImageNet shapes (224 px, 1000
classes), bf16 autocast on CUDA and channels_last, as the paper's ImageNet spec trains.

Arms, run interleaved step by step on the same batch (rotating their order every step):
plain dense PyTorch, static sparse, RigL + SparseOpt. Reports median full-step time
(zero_grad + forward + backward + optimizer.step) and median optimizer.step time, as ratios to
dense. Then times one RigL topology update: optimizer.step of an arm that updates every step
minus that of an arm that never updates, and its amortized cost at delta_t = 100.

    python benchmarks/step_overhead.py --steps 30 --batch-size 128 --device cpu
    python benchmarks/step_overhead.py --model resnet50 --device cuda --steps 50

`--compare-hooks REF` instead times the sparse hooks alone, OLD (sparseopt/state.py and its
modules at git commit REF, loaded from a `git archive` in a temporary directory as package
`sparseopt_ref`) against NEW (this tree), interleaved in one process on the same model, optimizer
settings and gradients. Per optimizer step, timestamps taken by extra step hooks split
`optimizer.step` into the pre-hooks, the base update and the post-hooks; hook time = pre + post.
Gradients are fixed random tensors copied into p.grad before each step (no forward/backward is
needed to time the hooks); topology updates are off (RigL with delta_t beyond the run).

    python benchmarks/step_overhead.py --compare-hooks f7b4bc4 --model resnet50 --steps 15
"""

from __future__ import annotations

import argparse
import importlib
import io
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

import sparseopt
from sparseopt.engine import autocast_context
from sparseopt.models import resnet20, resnet50

AMORTIZE_DELTA_T = 100
REPO = Path(__file__).resolve().parent.parent
REF_PACKAGE = "sparseopt_ref"
REF_MODULES = ("config", "distributions", "ham", "masks", "preconditioners", "topology", "state")
"""The modules `sparseopt.state` needs (its package __init__ would pull in data, models, ...)."""
OPTIMIZERS: dict[str, Callable] = {
    "SGD momentum 0.9, wd 5e-4": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
    "Adam, wd 1e-4": lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-4),
}  # fmt: skip
MODELS: dict[str, dict] = {
    "resnet20": {"build": lambda: resnet20(num_classes=100), "classes": 100, "size": 32,
                 "precision": "fp32", "channels_last": False, "title": "ResNet-20 (100 classes)"},
    "resnet50": {"build": lambda: resnet50(num_classes=1000), "classes": 1000, "size": 224,
                 "precision": "bf16", "channels_last": True,
                 "title": "ResNet-50 (1000 classes, 224 px, bf16 autocast on CUDA, channels_last)"},
}  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Arm:
    """One model + optimizer (+ optional sparse state) with its own step timings."""

    def __init__(
        self, name: str, device: torch.device, attach: Callable | None, model: str, seed: int = 0
    ) -> None:
        torch.manual_seed(seed)
        self.name = name
        self.device = device
        self.recipe = MODELS[model]
        self.model = self.recipe["build"]().to(device)
        if self.recipe["channels_last"]:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4
        )
        self.state = attach(self.model, self.optimizer) if attach else None
        self.step_times: list[float] = []
        self.opt_times: list[float] = []

    def step(self, x: torch.Tensor, y: torch.Tensor, record: bool) -> None:
        _sync(self.device)
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        with autocast_context(self.device, self.recipe["precision"]):
            logits = self.model(x)
        nn.functional.cross_entropy(logits.float(), y).backward()
        _sync(self.device)
        before_step = time.perf_counter()
        self.optimizer.step()
        _sync(self.device)
        end = time.perf_counter()
        if record:
            self.step_times.append(end - start)
            self.opt_times.append(end - before_step)


def run(
    steps: int,
    warmup: int,
    batch_size: int,
    device: torch.device,
    sparsity: float,
    update_repeats: int,
    model: str = "resnet20",
) -> str:
    """Run the benchmark and return the Markdown report."""
    recipe = MODELS[model]
    generator = torch.Generator().manual_seed(0)
    size = recipe["size"]
    x = torch.randn(batch_size, 3, size, size, generator=generator).to(device)
    if recipe["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, recipe["classes"], (batch_size,), generator=generator).to(device)
    never = 10**9
    arms = [
        Arm("dense (plain PyTorch)", device, None, model),
        Arm(
            f"static s={sparsity}",
            device,
            lambda m, o: sparseopt.attach(m, o, method="static", sparsity=sparsity),
            model,
        ),
        Arm(
            f"RigL+SparseOpt s={sparsity}",
            device,
            lambda m, o: sparseopt.attach(
                m,
                o,
                method="rigl",
                sparsity=sparsity,
                preconditioner="sparseopt",
                total_steps=never,
                delta_t=never,
            ),
            model,
        ),
    ]
    for index in range(warmup + steps):
        order = arms[index % len(arms) :] + arms[: index % len(arms)]
        for arm in order:
            arm.step(x, y, record=index >= warmup)

    updating = Arm("update", device, lambda m, o: sparseopt.attach(
        m, o, method="rigl", sparsity=sparsity, preconditioner="sparseopt", total_steps=never, delta_t=1), model)  # fmt: skip
    steady = Arm("no update", device, lambda m, o: sparseopt.attach(
        m, o, method="rigl", sparsity=sparsity, preconditioner="sparseopt", total_steps=never, delta_t=never), model)  # fmt: skip
    for index in range(1 + update_repeats):
        for arm in (updating, steady) if index % 2 else (steady, updating):
            arm.step(x, y, record=index >= 1)
    if updating.state.last_update is None or updating.state.last_update.step != 1 + update_repeats:
        raise RuntimeError("the updating arm did not run a topology update on every step")

    dense_step = statistics.median(arms[0].step_times)
    dense_opt = statistics.median(arms[0].opt_times)
    lines = [
        f"{recipe['title']}, batch {batch_size}, device {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads, {steps} timed steps per arm (median), interleaved.",
        "",
        "| arm | step ms | step ratio vs dense | optimizer.step ms | hook overhead ms | hook overhead / dense step |",
        "|---|---|---|---|---|---|",
    ]
    for arm in arms:
        step = statistics.median(arm.step_times)
        opt = statistics.median(arm.opt_times)
        lines.append(
            f"| {arm.name} | {step * 1e3:.1f} | {step / dense_step:.3f}x | {opt * 1e3:.2f} "
            f"| {(opt - dense_opt) * 1e3:+.2f} | {(opt - dense_opt) / dense_step * 100:+.2f}% |"
        )
    update = statistics.median(updating.opt_times) - statistics.median(steady.opt_times)
    lines += [
        "",
        "Full-step ratios carry the machine's timing noise; the hook overhead (median optimizer.step "
        "minus dense's) is the precise cost of sparseopt's per-step work.",
        "",
        f"RigL topology update (ERK, all layers, drop fraction {updating.state.last_update.drop_fraction:.2f}): "
        f"{update * 1e3:.1f} ms (median of {update_repeats}); amortized at delta_t={AMORTIZE_DELTA_T}: "
        f"{update / AMORTIZE_DELTA_T * 1e3:.3f} ms/step = {update / AMORTIZE_DELTA_T / dense_step * 100:.2f}% of a dense step.",
        "",
        "Command: `python " + " ".join(sys.argv) + "`",
    ]
    return "\n".join(lines)


def load_reference(commit: str, directory: Path) -> ModuleType:
    """`sparseopt.state` as of git `commit`, imported as `sparseopt_ref.state` from `directory`."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, *(f"sparseopt/{m}.py" for m in REF_MODULES)],
        check=True,
        capture_output=True,
    ).stdout
    package = directory / REF_PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            source = tar.extractfile(member).read().decode()
            source = re.sub(
                r"^(\s*)from sparseopt\.", rf"\1from {REF_PACKAGE}.", source, flags=re.M
            )
            (package / Path(member.name).name).write_text(source)
    sys.path.insert(0, str(directory))
    return importlib.import_module(f"{REF_PACKAGE}.state")


class HookTimer:
    """Times an optimizer's sparse hooks: its own step hooks registered around `attach`'s."""

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
        self.device = device
        self.marks: dict[str, float] = {}
        optimizer.register_step_post_hook(lambda *_: self._mark("update_end"))

    def after_attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Register the mark that follows `attach`'s pre-hook (call right after `attach`)."""
        optimizer.register_step_pre_hook(lambda *_: self._mark("pre_end"))

    def _mark(self, name: str) -> None:
        _sync(self.device)
        self.marks[name] = time.perf_counter()


def compare_hooks(
    commit: str, model: str, steps: int, warmup: int, sparsity: float, device: torch.device
) -> str:
    """Median hook time per optimizer.step, OLD (`commit`) vs NEW, per optimizer; Markdown."""
    with tempfile.TemporaryDirectory() as directory:
        old_state = load_reference(commit, Path(directory))
        builds = {f"OLD ({commit})": old_state.attach, "NEW (this tree)": sparseopt.attach}
        lines = [
            f"{model}, RigL+SparseOpt s={sparsity} (ERK), no topology "
            f"update, device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU "
            f"threads, {steps} timed steps per arm (median), interleaved.",
            "",
            "| optimizer | hooks | optimizer.step ms | base update ms | hook ms (pre + post) | hook share of step | NEW hook speed-up |",
            "|---|---|---|---|---|---|---|",
        ]
        for label, make_optimizer in OPTIMIZERS.items():
            arms = []
            for name, attach in builds.items():
                torch.manual_seed(0)
                network = MODELS[model]["build"]().to(device)
                optimizer = make_optimizer(network.parameters())
                timer = HookTimer(optimizer, device)
                attach(network, optimizer, method="rigl", sparsity=sparsity,
                       preconditioner="sparseopt", total_steps=10**9, delta_t=10**9)  # fmt: skip
                timer.after_attach(optimizer)
                generator = torch.Generator().manual_seed(1)
                grads = [torch.randn(p.shape, generator=generator).to(device) for p in network.parameters()]  # fmt: skip
                arms.append((name, network, optimizer, timer, grads, {"step": [], "hooks": []}))
            for index in range(warmup + steps):
                order = arms if index % 2 else arms[::-1]
                for _name, network, optimizer, timer, grads, times in order:
                    for param, grad in zip(network.parameters(), grads, strict=True):
                        param.grad = grad.clone()
                    _sync(device)
                    start = time.perf_counter()
                    optimizer.step()
                    _sync(device)
                    end = time.perf_counter()
                    if index >= warmup:
                        marks = timer.marks
                        times["step"].append(end - start)
                        times["hooks"].append(marks["pre_end"] - start + end - marks["update_end"])
            old_hooks = statistics.median(arms[0][5]["hooks"])
            for name, *_, times in arms:
                step, hooks = statistics.median(times["step"]), statistics.median(times["hooks"])
                speedup = "" if name.startswith("OLD") else f"{old_hooks / hooks:.1f}x"
                lines.append(
                    f"| {label} | {name} | {step * 1e3:.1f} | {(step - hooks) * 1e3:.1f} "
                    f"| {hooks * 1e3:.1f} | {hooks / step * 100:.0f}% | {speedup} |"
                )
            del arms
        lines += ["", "Command: `python " + " ".join(sys.argv) + "`"]
        return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per arm")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per arm first")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--sparsity", type=float, default=0.95)
    parser.add_argument("--update-repeats", type=int, default=5, help="timed RigL updates")
    parser.add_argument("--model", choices=sorted(MODELS), default="resnet20")
    parser.add_argument(
        "--compare-hooks",
        metavar="REF",
        help="time the sparse hooks alone, OLD (git commit REF) vs NEW (this tree)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.compare_hooks:
        print(compare_hooks(args.compare_hooks, args.model, args.steps, args.warmup, args.sparsity, device))  # fmt: skip
        return
    print(
        run(
            args.steps,
            args.warmup,
            args.batch_size,
            device,
            args.sparsity,
            args.update_repeats,
            args.model,
        )
    )


if __name__ == "__main__":
    main()
