"""analysis.report end to end on MLflow stores: files, figures, HTML, and the report run."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from analysis_fixtures import Trial, build_store, clean_trials, lr_search_trials, planted_trials
from mlflow.tracking import MlflowClient

from analysis.errors import BadInputError
from analysis.export import export_experiment
from analysis.plots import FIGURES
from analysis.primary import PrimaryDeclaration
from analysis.report import ReportResult, report_from_export, write_report


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ReportResult]:
    root = tmp_path_factory.mktemp("planted")
    uri, _ = build_store(root, "planted", planted_trials())
    return uri, write_report(uri, "planted", root / "report")


def test_report_files_and_figures_are_written(planted) -> None:
    _, result = planted
    out = result.out_dir
    for name in FIGURES:
        png, svg = out / "plots" / f"{name}.png", out / "plots" / f"{name}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000
        assert "<svg" in svg.read_text()[:2_000]
    for table in (
        "primary",
        "budget_equivalence",
        "summary",
        "paired_differences",
        "paired_seeds",
        "matched_lr",
        "budget_to_target",
        "itop_sparsity_per_run",
        "guards",
    ):
        assert len((out / "tables" / f"{table}.csv").read_text().splitlines()) > 1
    assert (out / "data" / "trials").is_dir() and (out / "data" / "manifest.json").is_file()


def test_the_report_opens_on_the_primary_verdict(planted) -> None:
    _, result = planted
    text = result.markdown.read_text()
    assert text.split("\n## ")[1].startswith("Primary verdict")
    assert (
        "Primary contrasts: rigl+sparseopt − rigl (default: every arm with a modifier against "
        "its base arm); α = 0.05." in text
    )
    # every paired seed counts, each cell weighs 1/4: cell means NULL 0.01, 0.01, PLANT 2.24
    # and, without seed 4 at s=0.95 e=4, 2.25 -> (0.01 + 0.01 + 2.24 + 2.25) / 4 = 1.1275
    (sentence,) = result.verdict.sentences
    assert sentence.startswith("rigl+sparseopt vs rigl: +1.13 points [+0.91, +1.35] (95% ")
    assert "matched lr, pooled over 4 cells: 19 pairs of 5 seeds" in sentence
    assert f"- {sentence}" in text
    with (result.out_dir / "tables" / "primary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:10] == [
        "contrast",
        "arm",
        "baseline",
        "scope",
        "view",
        "estimate",
        "ci_low",
        "ci_high",
        "pairs",
        "seeds",
    ]
    assert [(r["scope"], r["view"]) for r in rows[:3]] == [
        ("all", "best common lr"),
        ("all", "best lr"),
        ("all", "best lr, cross-fitted"),
    ]
    assert {r["scope"] for r in rows} == {"all", "sparsity=0.9", "sparsity=0.95"} | {
        "budget=2",
        "budget=4",
    }
    html = result.html.read_text()
    assert html.index("<h2>Primary verdict</h2>") < html.index("<h2>How these numbers")


def test_markdown_has_the_paper_style_table_and_the_partial_banner(planted) -> None:
    _, result = planted
    text = result.markdown.read_text()
    assert result.partial
    assert "PARTIAL REPORT" in text.split("##")[0]
    assert "| sparsity | arm | 2 ep | 4 ep |" in text
    # s=0.95 rigl+sparseopt at e=4: seeds 0-3 only, mean 58.33 (hand: 56 + noise + plant)
    assert re.search(
        r"\| 0\.95 \| rigl\+sparseopt \| 57\.28 ± 0\.79 \[56\.30, 58\.26\] \(t, n=5\) † "
        r"\| 58\.33 ± 0\.91 \[56\.88, 59\.77\] \(t, n=4\) \|",
        text,
    )
    assert (
        "reaches 56.04% (rigl @ 4) at 2 epochs vs 4 for rigl (speedup 2.00×); no bootstrap "
        "(n < 8: too few seeds to resample), n=5/4 seeds per budget" in text
    )
    assert (
        "Gain, best lr (each arm at its own chosen lr): e=2: +2.24 pp [1.55, 2.93] (t, n=5)" in text
    )
    assert "Gain, matched lr (both arms at the best common lr): e=2: +2.24 pp" in text
    assert "Holm" in text and "![" in text


def _guard_box(text: str) -> str:
    """The part of report.md between the primary verdict and the method section."""
    return text.split("\n### Budget equivalence")[-1].split("\n## How these numbers")[0]


def test_guards_csv_and_the_warning_box_at_the_top(planted) -> None:
    _, result = planted
    with (result.out_dir / "tables" / "guards.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["guard", "scope", "detail"]
    assert [row[0] for row in rows[1:]] == ["lr_at_edge"] * 8 + ["few_seeds"] + [
        "powerless_family"
    ] * 3 + ["guard_not_evaluated"]
    assert rows[9] == [
        "few_seeds",
        "digits/small_cnn/rigl s=0.95 e=4 · rigl+sparseopt vs rigl (baseline)",
        "paired seeds best lr: 4, best common lr: 4, best lr, cross-fitted: 4; the spread of "
        "best lr (sd of differences 0.65 pp) needs 5 seeds for a ±1-pp 95% t-interval",
    ]
    top = _guard_box(result.markdown.read_text())
    assert "<details><summary>⚠ Verdict guards: 13 warning(s) of 4 kind(s): read" in top
    assert "- lr_at_edge ×8: the chosen lr is the lowest or highest" in top
    # planted cells ran 1 lr each: the chosen lr is always at an edge, and the box says so
    assert "outside the grid — expected for this design: with 1 lr per cell the chosen" in top
    assert "- few_seeds ×1: the paired differences spread too much" in top
    assert "the measured runs made it fire" in top
    assert "- powerless_family ×3: the primary family is too large for its seeds" in top
    assert "short_update_interval: 39 of 39 runs have no steps_per_epoch tag" in top
    assert top.count("</details>") == 1
    assert "## Verdict guards" in result.markdown.read_text()
    html = result.html.read_text()
    assert html.index("<h2>Primary verdict</h2>") < html.index('<details class="guards">')
    assert html.index('<details class="guards">') < html.index("<h2>How these numbers")
    assert "lr_at_edge ×8" in html


def test_html_is_self_contained(planted) -> None:
    _, result = planted
    html = result.html.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert html.count('src="data:image/png;base64,') == len(FIGURES)
    assert 'src="plots/' not in html and "<link" not in html
    assert 'class="banner"' in html and "<table>" in html


def test_report_is_logged_as_a_report_run_and_not_exported_as_a_trial(planted, tmp_path) -> None:
    uri, result = planted
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.data.tags["sparsesweep.role"] == "report"
    assert run.data.tags["sparsesweep.partial"] == "true"
    assert run.data.tags["sparsesweep.guards"] == (
        "lr_at_edge,few_seeds,powerless_family,guard_not_evaluated"
    )
    counts = {
        key.removeprefix("sparsesweep.guard."): value
        for key, value in run.data.tags.items()
        if key.startswith("sparsesweep.guard.")
    }
    assert counts == {
        "lr_at_edge": "8",
        "lr_tie": "0",
        "few_selection_seeds": "0",
        "lr_mismatch": "0",
        "few_seeds": "1",
        "powerless_family": "3",
        "short_update_interval": "0",
        "inactive_ablation": "0",
        "guard_not_evaluated": "1",
    }
    assert json.loads(run.data.tags["sparsesweep.primary"]) == {
        "primary": ["rigl+sparseopt:rigl"],
        "alpha": 0.05,
        "target": None,
        "halfwidth": 1.0,
    }
    assert run.data.tags["sparsesweep.verdict"] == result.verdict.sentences[0]
    key = "answer.rigl_sparseopt.vs.rigl.matched_lr"
    pooled = result.verdict.primary.iloc[0]
    assert run.data.metrics[key] == pytest.approx(pooled["estimate"])
    assert (run.data.metrics[f"{key}.pairs"], run.data.metrics[f"{key}.seeds"]) == (19.0, 5.0)
    assert run.info.status == "FINISHED"
    # the run's description is the verdict and the guard summary, as the terminal prints it
    note = run.data.tags["mlflow.note.content"]
    assert note == result.answer
    assert note.startswith(f"Primary verdict:\n\n- {result.verdict.sentences[0]}\n")
    assert "\nVerdict guards: 13 warning(s) of 4 kind(s):\n\n- lr_at_edge ×8: " in note
    assert run.data.params == {
        "workloads": "default",
        "datasets": "digits",
        "models": "small_cnn",
        "arms": "rigl,rigl+sparseopt",
        "sparsities": "0.9,0.95",
        "budgets": "2,4",
        "seeds": "0,1,2,3,4",
        "search_metric": "val_acc1",
        "primary": "rigl+sparseopt:rigl",
        "alpha": "0.05",
        "halfwidth": "1",
        "target": "baseline at its largest budget",
    }
    names = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {"report.md", "report.html", "plots", "tables", "data"} <= names
    assert "accuracy_vs_budget.png" in names  # mlflow.log_figure, at the top
    again = export_experiment(uri, "planted", tmp_path / "again")
    assert again.manifest["trials"] == len(planted_trials())


def test_complete_sweep_report_has_no_banner_and_names_its_selection(tmp_path: Path) -> None:
    uri, _ = build_store(tmp_path, "lr", lr_search_trials())
    result = write_report(uri, "lr", tmp_path / "report", log_to_mlflow=False)
    text = result.markdown.read_text()
    assert not result.partial and result.mlflow_run_id is None
    assert "PARTIAL" not in text
    assert "best lr on val_acc1" in text and "final stage" in text


def test_the_declaration_comes_from_the_experiment_tag_and_primary_overrides_it(
    tmp_path: Path,
) -> None:
    trials = clean_trials(arms=("rigl", "rigl+sparseopt", "rigl+sparseopt+cap"))
    uri, _ = build_store(tmp_path, "tagged", trials)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tagged").experiment_id
    tag = {"primary": ["rigl+sparseopt+cap:rigl+sparseopt"], "alpha": 0.01, "halfwidth": 0.5}
    client.set_experiment_tag(experiment, "sparsesweep.primary", json.dumps(tag))
    tagged = write_report(uri, "tagged", tmp_path / "tagged", log_to_mlflow=False)
    assert tagged.declaration == PrimaryDeclaration(
        (("rigl+sparseopt+cap", "rigl+sparseopt"),), 0.01, None, 0.5
    )
    text = tagged.markdown.read_text()
    assert (
        "Primary contrasts: rigl+sparseopt+cap − rigl+sparseopt (experiment tag "
        "sparsesweep.primary); α = 0.01." in text
    )
    assert json.loads((tagged.out_dir / "data" / "manifest.json").read_text())["primary"] == (
        json.dumps(tag)
    )
    override = write_report(
        uri,
        "tagged",
        tmp_path / "override",
        log_to_mlflow=False,
        primary=["rigl+sparseopt:rigl", "rigl+sparseopt+cap:rigl"],
        target=61.5,
    )
    assert override.declaration == PrimaryDeclaration(
        (("rigl+sparseopt", "rigl"), ("rigl+sparseopt+cap", "rigl")), 0.01, 61.5, 0.5
    )
    assert "(--primary); α = 0.01." in override.markdown.read_text()
    assert len(override.verdict.sentences) == 2
    # the same report from the exported Parquet alone
    again = report_from_export(
        tmp_path / "override" / "data",
        tmp_path / "again",
        primary=["rigl+sparseopt:rigl", "rigl+sparseopt+cap:rigl"],
        target=61.5,
    )
    assert again.declaration == override.declaration and again.mlflow_run_id is None
    for table in ("primary", "budget_equivalence", "paired_differences", "guards"):
        assert (tmp_path / "again" / "tables" / f"{table}.csv").read_text() == (
            tmp_path / "override" / "tables" / f"{table}.csv"
        ).read_text()
    with pytest.raises(BadInputError, match="write it ARM:BASELINE"):
        write_report(uri, "tagged", tmp_path / "bad", primary=["rigl"])
    assert not (tmp_path / "bad").exists()  # rejected before the export


def test_a_report_with_no_guard_says_so_and_tags_none(tmp_path: Path) -> None:
    uri, _ = build_store(tmp_path, "clean", clean_trials())
    result = write_report(uri, "clean", tmp_path / "report")
    assert result.guards.empty
    text = result.markdown.read_text()
    assert "Verdict guards: none fired." in _guard_box(text)
    assert "<details" not in text
    assert "Verdict guards: none fired." in result.html.read_text()
    lines = (result.out_dir / "tables" / "guards.csv").read_text().splitlines()
    assert lines == ["guard,scope,detail"]
    tags = MlflowClient(tracking_uri=uri).get_run(result.mlflow_run_id).data.tags
    assert tags["sparsesweep.guards"] == "none"
    assert tags["sparsesweep.guard.few_seeds"] == "0"


def test_report_of_a_sweep_with_nothing_finished_yet(tmp_path: Path) -> None:
    running = [
        Trial("rigl", 0.9, 4, 0, 50.0, status="running", epochs=1),
        Trial("rigl+sparseopt", 0.9, 4, 0, 50.0, status="running", epochs=2),
    ]
    uri, _ = build_store(tmp_path, "early", running)
    result = write_report(uri, "early", tmp_path / "report", log_to_mlflow=False)
    text = result.markdown.read_text()
    assert result.partial and "2 of 2 trials are running" in text
    assert "No contrast has finished runs on both sides yet" in text
    for name in FIGURES:
        assert (tmp_path / "report" / "plots" / f"{name}.png").stat().st_size > 1_000


def test_figures_have_a_panel_per_group_that_ran_and_no_empty_ones() -> None:
    """Dense runs only s=0 and SET only s>0, with different budgets: no empty axes anywhere."""
    from analysis_fixtures import records_for

    from analysis.compare import compare
    from analysis.export import build_tables
    from analysis.plots import accuracy_vs_budget, accuracy_vs_epoch

    trials = [Trial("dense", 0.0, 2, seed, 90.0 + seed) for seed in range(2)]
    for sparsity in (0.9, 0.95):
        for budget in (2, 4):
            trials += [Trial("set", sparsity, budget, seed, 80.0 + seed) for seed in range(2)]
    tables = build_tables(records_for(trials))
    comparison = compare(tables.trials.to_pandas(), tables.epochs.to_pandas())

    def panels(figure) -> list[str]:
        visible = [ax for ax in figure.axes if ax.get_visible()]
        assert all(ax.get_lines() for ax in visible), "a visible panel has no data"
        return sorted(ax.get_title() for ax in visible)

    by_budget = accuracy_vs_budget(comparison)
    assert panels(by_budget) == ["digits/small_cnn s=0.9", "digits/small_cnn s=0.95"]
    for ax in by_budget.axes:  # dense beside the sparse arm in every panel, with its n
        assert ax.get_legend_handles_labels()[1] == ["dense (reference) (n=2)", "set (n=2)"]
    assert panels(accuracy_vs_epoch(comparison)) == [
        "digits/small_cnn/dense s=0 e=2",
        "digits/small_cnn/set s=0.9 e=2",
        "digits/small_cnn/set s=0.9 e=4",
        "digits/small_cnn/set s=0.95 e=2",
        "digits/small_cnn/set s=0.95 e=4",
    ]


def test_dense_sits_beside_the_sparse_arms_and_nothing_is_shown_twice(tmp_path: Path) -> None:
    """One sparsity, accuracy rising to the last epoch (best = final): one table holds dense
    and the sparse arms, no second identical `best` table, and no one-point ITOP figure."""
    trials = [
        Trial("dense", 0.0, budget, seed, 90.0 + seed) for budget in (2, 4) for seed in (0, 1)
    ]
    trials += [
        Trial(arm, 0.9, budget, seed, 80.0 + seed)
        for arm in ("rigl", "rigl+sparseopt")
        for budget in (2, 4)
        for seed in (0, 1)
    ]
    uri, _ = build_store(tmp_path, "beside", trials)
    result = write_report(uri, "beside", tmp_path / "report", log_to_mlflow=False)
    text = result.markdown.read_text()
    section = text.split("## Accuracy vs epoch budget")[1].split("\n## ")[0]
    assert section.count("\n### ") == 1
    assert "### digits / small_cnn — final test_acc1 (%)" in section
    rows = [line.split(" | ")[:2] for line in section.splitlines() if line.startswith("| 0")]
    assert rows == [["| 0", "dense"], ["| 0.9", "rigl"], ["| 0.9", "rigl+sparseopt"]]
    assert not (tmp_path / "report" / "plots" / "itop_vs_sparsity.png").exists()
    assert "ITOP rate vs sparsity" not in text
    assert (tmp_path / "report" / "plots" / "accuracy_vs_budget.png").is_file()
