"""Reports rendered from real villin runs: two that complete, one that blows up; number check and findings."""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

import pytest

from sciagent.errors import UserError
from sciagent.report.attribution import check_text
from sciagent.report.findings import FINDINGS_LABEL, findings
from sciagent.report.models import (
    Adaptation,
    ConditionRecord,
    GuardrailChange,
    Provenance,
    StudyRecord,
    VerdictOutlook,
)
from sciagent.report.numbers import find_numbers
from sciagent.report.render import load_record, render_report
from sciagent.report.tables import MISSING, condition_rows, display_cells, format_number
from sciagent.report.values import study_values
from sciagent.science.simulate import SimulationOutcome, simulate_and_analyze
from sciagent.science.spec import MDSpec
from table_checks import assert_row_is_the_analysis

MODEL_ID = "meta-llama/Meta-Llama-3.1-8B-Instruct"
WRONG = "9.876"  # an RMSD no run produced: three decimals, so nothing in the data matches by chance
OUTLOOK = VerdictOutlook(
    needed_production_ps=50.0,
    estimated_wall_s=372.0,
    command="sciagent run --budget 12m",
    reason="too short: 0.4 ps of production, 50 ps needed",
)
QUICK = {
    "structure": "villin",
    "production_steps": 200,
    "report_interval": 20,
    "platform": "CPU",
    "minimize_max_iterations": 100,
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SimulationOutcome]:
    """Three real runs: 300 K and 350 K complete; 10 fs without constraints at 600 K blows up."""
    root = tmp_path_factory.mktemp("runs")
    specs = {
        "T300-r1": MDSpec(**QUICK, temperature_k=300.0),
        "T350-r1": MDSpec(**QUICK, temperature_k=350.0),
        "T600-r1": MDSpec(**QUICK, temperature_k=600.0, timestep_fs=10.0, constraints="none"),
    }
    found = {name: simulate_and_analyze(spec, root / name) for name, spec in specs.items()}
    assert found["T300-r1"].analysis and found["T350-r1"].analysis
    assert found["T600-r1"].result.failure_class == "instability"
    return found


def _condition(name: str, outcome: SimulationOutcome) -> ConditionRecord:
    result = outcome.result
    return ConditionRecord(
        name=name,
        temperature_k=result.spec.temperature_k,
        replica=1,
        spec=result.spec,
        status="completed" if result.ok else "failed",
        attempts=1 if result.ok else 2,
        outcome=outcome,
        failure=None if result.ok else result.message,
    )


@pytest.fixture(scope="module")
def record(outcomes: dict[str, SimulationOutcome]) -> StudyRecord:
    """A study as the workflow would record it, with one right and one wrong number in its interpretation."""
    analysis = outcomes["T300-r1"].analysis
    assert analysis is not None
    right = f"{analysis.final_window_rmsd_mean_angstrom:.2f}"
    failed = outcomes["T600-r1"].result
    return StudyRecord(
        run_id="test-villin-0001",
        goal="Is the villin headpiece stable from 300 to 600 K in implicit solvent?",
        structure="villin",
        plan={"temperatures_k": [300.0, 350.0, 600.0], "replicas": 1, "production_steps": 200},
        plan_source="model",
        rationale="Bracket the melting range; a short run checks the setup <first>.",
        guardrail_changes=[
            GuardrailChange(
                field="temperatures_k",
                proposed=[300.0, 350.0, 1200.0],
                applied=[300.0, 350.0, 600.0],
                reason="1200 K is above the 1000 K limit",
            )
        ],
        conditions=[_condition(name, outcome) for name, outcome in outcomes.items()],
        adaptations=[
            Adaptation(
                condition="T600-r1",
                round=1,
                trigger="instability",
                error=failed.message,
                decided_by="model",
                changes={"timestep_fs": 10.0, "constraints": "none"},
                rationale="Retry once | to confirm the blow-up.",
            )
        ],
        interpretation=(
            f"At 300 K the final-window backbone RMSD was {right} Å, while the 350 K run reached "
            f"{WRONG} Å.\n\nThe 600 K run failed; 2 of 3 conditions completed."
        ),
        interpretation_source="model",
        budget_s=300.0,
        outlook=OUTLOOK,
        provenance=Provenance(
            sciagent_version="0.1.0",
            openmm_version=failed.openmm_version,
            python_version="3.11.2",
            hostname="test-host",
            platforms=["CPU"],
            llm_profile="local-vllm",
            model_id=MODEL_ID,
            seeds={"T300-r1": 1, "T350-r1": 1, "T600-r1": 1},
            phase_wall_times_s={"plan": 0.5, "simulate": 12.25, "report": 0.75},
            started_at="2026-01-01T10:00:00+00:00",
            finished_at="2026-01-01T10:01:00+00:00",
        ),
    )


@pytest.fixture(scope="module")
def report(record: StudyRecord, tmp_path_factory: pytest.TempPathFactory):
    return render_report(record, tmp_path_factory.mktemp("report"))


def test_every_file_is_written_and_the_html_is_self_contained(report) -> None:
    for path in (report.markdown, report.html, report.results_json):
        assert path.is_file() and path.stat().st_size > 0
    assert set(report.plots) == {"backbone_rmsd", "radius_of_gyration", "temperature", "potential_energy"}
    for path in report.plots.values():
        assert path.parent.name == "plots" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = report.html.read_text()
    assert html.count('src="data:image/png;base64,') == 4
    assert not re.search(r'(src|href)="(https?:|//)', html)
    assert "<script" not in html and "<link" not in html


def test_table_numbers_are_the_outcome_values_exactly(report, outcomes) -> None:
    table = {row["condition"]: row for row in json.loads(report.results_json.read_text())["table"]}
    for name in ("T300-r1", "T350-r1"):
        result, analysis = outcomes[name].result, outcomes[name].analysis
        assert analysis is not None
        row = table[name]
        assert (row["steps_completed"], row["steps_planned"]) == (result.steps_completed, 200)
        assert row["simulated_ns"] == result.simulated_ns and row["ns_per_day"] == result.ns_per_day
        assert row["platform"] == result.platform == "CPU" and row["timestep_fs"] == 2.0
        assert_row_is_the_analysis(row, analysis)
        assert (
            row["target_temperature_k"]
            == analysis.target_temperature_k
            == outcomes[name].result.spec.temperature_k
        )
        assert row["temperature_deviation_k"] == analysis.temperature_k.mean - analysis.target_temperature_k
        assert row["verdict"] == analysis.assessment.verdict and row["reasons"] == analysis.assessment.reasons


def test_a_failed_condition_shows_dashes_not_zeros(report, outcomes) -> None:
    row = {r["condition"]: r for r in json.loads(report.results_json.read_text())["table"]}["T600-r1"]
    measured = ("final_window_rmsd_mean_angstrom", "rg_mean_nm", "max_rmsf_angstrom", "ss_retention")
    assert all(row[key] is None for key in (*measured, "ns_per_day", "mean_temperature_k", "verdict"))
    assert (row["status"], row["failure_class"]) == ("failed", "instability")
    assert row["note"] == outcomes["T600-r1"].result.message
    analysis_line = [
        line for line in report.markdown.read_text().splitlines() if line.startswith("| T600-r1 | —")
    ]
    assert analysis_line, "the analysis table row of the failed condition"
    cells = [cell.strip() for cell in analysis_line[0].strip("|").split("|")][1:]
    assert cells == [MISSING] * 7
    assert "failed (instability)" in report.markdown.read_text()
    assert ">failed (instability)</td>" in report.html.read_text()


def test_the_wrong_number_is_flagged_and_the_right_one_is_not(report, record) -> None:
    results = json.loads(report.results_json.read_text())
    check = results["number_check"]
    assert [f["text"] for f in check["flagged"]] == [WRONG]
    assert check["checked"] == len(find_numbers(record.interpretation)) == 7
    assert check["attribution"] == "the condition and metric each sentence names"
    summary = "7 numbers checked against the condition and metric each sentence names; 1 flagged."
    assert check["summary"] == summary and results["interpretation_set_aside"] is None
    reason = check["flagged"][0]["reason"]
    assert reason.startswith(f"{WRONG} matches no RMSD value of T300-r1 or T350-r1; nearest ")
    markdown, html = report.markdown.read_text(), report.html.read_text()
    assert f"**{WRONG}**[^nd1]" in markdown and f"[^nd1]: ⚠ {reason}" in markdown
    assert f'<mark title="{reason}">{WRONG}</mark>' in html
    right = record.interpretation.split("RMSD was ")[1].split(" ")[0]
    assert f">{right}</mark>" not in html and f"**{right}**" not in markdown
    for text in (markdown, html):
        assert summary in text
        assert f"Interpretation — model-written ({MODEL_ID})" in text  # a usable text is shown as such


def _rmsd(outcomes: dict[str, SimulationOutcome], name: str) -> float:
    analysis = outcomes[name].analysis
    assert analysis is not None
    return analysis.final_window_rmsd_mean_angstrom


def test_a_value_of_another_condition_or_metric_is_flagged_with_why(record, outcomes) -> None:
    pool = study_values(record)
    cold, warm = _rmsd(outcomes, "T300-r1"), _rmsd(outcomes, "T350-r1")
    written = format_number(cold)
    assert written != format_number(warm)  # the two runs differ at the precision written
    attributed = [
        f"At 300 K the final-window backbone RMSD was {written} Å.",
        f"T300-r1 reached a backbone RMSD of {written} Å.",
        f"The lowest final-window RMSD was {written} Å.",  # no condition named: any condition's RMSD
        f"At 300 K it settled at {written} Å.",  # no quantity named but the unit: RMSD or RMSF of T300-r1
    ]
    for sentence in attributed:
        check = check_text(sentence, pool)
        assert check.flagged == [] and check.attributed >= 1, sentence
    misattributed = {
        f"At 350 K the final-window backbone RMSD was {written} Å.": "RMSD value of T350-r1",
        f"T350-r1 reached a backbone RMSD of {written} Å.": "RMSD value of T350-r1",
        f"At 300 K the radius of gyration was {written} nm.": "radius of gyration value of T300-r1",
    }
    for sentence, scope in misattributed.items():
        [flag] = check_text(sentence, pool).flagged
        assert flag.text == written, sentence
        assert flag.reason.startswith(f"{written} matches no {scope}; nearest "), sentence


def test_differences_are_allowed_between_the_conditions_a_sentence_names(record, outcomes) -> None:
    pool = study_values(record)
    difference = format_number(abs(_rmsd(outcomes, "T350-r1") - _rmsd(outcomes, "T300-r1")))
    compared = f"The backbone RMSD at 350 K was {difference} Å away from the one at 300 K."
    assert check_text(compared, pool).flagged == []
    alone = f"The backbone RMSD at 350 K was {difference} Å."
    assert [f.text for f in check_text(alone, pool).flagged] == [difference]


def test_study_values_tag_each_number_with_its_condition_and_metric(record) -> None:
    pool = study_values(record)
    row = condition_rows(record)[0]
    tagged = {(v.field, v.condition): v for v in pool.values}
    rmsd = tagged[("final_window_rmsd_mean_angstrom", "T300-r1")]
    assert rmsd.value == row.final_window_rmsd_mean_angstrom and "RMSD" in rmsd.metrics
    drift = tagged[("potential_energy_drift_kj_mol_per_ns", "T300-r1")]
    assert drift.metrics == {"energy", "drift"}
    assert tagged[("ns_per_day", "T300-r1")].metrics == {"speed"}
    study = {v.value for v in pool.values if v.condition is None}
    assert {3.0, 2.0, 1.0, 1200.0, 600.0, 12.25, 300.0, 5.0, 50.0} <= study  # counts, plan, budget ...
    assert abs(row.temperature_deviation_k) in {v.value for v in pool.values}  # "105 K below the target"
    assert 9.876 not in {v.value for v in pool.values}  # the interpretation vouches for nothing
    assert pool.reference_k == 300.0


def test_model_written_sections_are_labelled(report, record, tmp_path: Path) -> None:
    for text in (report.markdown.read_text(), report.html.read_text()):
        assert f"Rationale — model-written ({MODEL_ID})" in text
        assert f"Interpretation — model-written ({MODEL_ID})" in text
    fallback = record.model_copy(update={"plan_source": "fallback", "interpretation_source": "fallback"})
    files = render_report(fallback, tmp_path)
    markdown = files.markdown.read_text()
    assert "Rationale — fallback plan (no model answer validated)" in markdown
    assert "Interpretation — fallback text (no model answer validated)" in markdown
    assert "model-written (" not in markdown


def test_html_escapes_model_text_and_markdown_cells_keep_their_columns(report) -> None:
    html = report.html.read_text()
    assert "&lt;first&gt;" in html and "<first>" not in html
    assert "Retry once \\| to confirm" in report.markdown.read_text()


def test_results_json_round_trips_and_rerenders_identically(report, record, tmp_path: Path) -> None:
    text = report.results_json.read_text()
    json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in results.json"))
    loaded = load_record(report.results_json)
    assert loaded == record
    again = render_report(loaded, tmp_path)
    assert again.results_json.read_text() == text
    assert again.markdown.read_text() == report.markdown.read_text()


def test_a_missing_state_csv_is_noted_not_fatal(record, tmp_path: Path) -> None:
    conditions = []
    for condition in record.conditions:
        if condition.outcome and condition.outcome.result.ok:
            result = condition.outcome.result
            moved = result.model_copy(update={"files": {**result.files, "state_csv": str(tmp_path / "gone")}})
            outcome = condition.outcome.model_copy(update={"result": moved})
            condition = condition.model_copy(update={"outcome": outcome})
        conditions.append(condition)
    files = render_report(record.model_copy(update={"conditions": conditions}), tmp_path / "out")
    assert set(files.plots) == {"backbone_rmsd", "radius_of_gyration"}
    assert "Not plotted: T300-r1's temperature and energy: state.csv not read" in files.markdown.read_text()
    assert "Not plotted: T350-r1's temperature and energy" in unescape(files.html.read_text())


def test_load_record_errors_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_record(tmp_path / "results.json")
    (tmp_path / "bad.json").write_text('{"table": []}')
    with pytest.raises(UserError, match=r"not a results\.json"):
        load_record(tmp_path / "bad.json")


def test_format_number_rounds_only_for_display() -> None:
    assert format_number(None) == MISSING
    assert format_number(0.0) == "0"  # a measured zero stays a zero; only None is "—"
    assert format_number(0.47076743) == "0.4708"
    assert format_number(408909.07) == "408909"
    assert format_number(-3682.65) == "-3683"
    assert format_number(200) == "200"
    assert format_number(0.00039999999999999996) == "0.0004"


def test_not_run_and_unanalysed_conditions_have_no_numbers(record, outcomes) -> None:
    completed = outcomes["T300-r1"]
    unanalysed = completed.model_copy(update={"analysis": None, "analysis_error": "ValueError: no frames"})
    spec = completed.result.spec
    conditions = [
        ConditionRecord(
            name="A", temperature_k=300.0, replica=1, spec=spec, status="completed", outcome=unanalysed
        ),
        ConditionRecord(
            name="B", temperature_k=300.0, replica=2, spec=spec, status="not run", failure="budget spent"
        ),
    ]
    rows = condition_rows(record.model_copy(update={"conditions": conditions}))
    analysed_cells = [display_cells(row) for row in rows]
    assert analysed_cells[0]["Status"] == "completed (analysis failed)"
    assert analysed_cells[0]["ns/day"] == format_number(completed.result.ns_per_day)
    assert rows[0].note == "analysis failed: ValueError: no frames"
    assert (analysed_cells[1]["Steps (done/planned)"], analysed_cells[1]["Status"]) == (
        f"{MISSING}/200",
        "not run",
    )
    assert rows[1].note == "budget spent"
    for cells in analysed_cells:
        assert cells["Final-window backbone RMSD (Å)"] == cells["Verdict"] == cells["SS retention"] == MISSING


# --- findings, set-aside model text, the verdict outlook ------------------------------------------


def test_findings_say_what_each_temperature_did_with_the_analysis_numbers(record, outcomes) -> None:
    sentences = findings(record)
    for name, temperature in (("T300-r1", "300"), ("T350-r1", "350")):
        analysis = outcomes[name].analysis
        assert analysis is not None
        [sentence] = [s for s in sentences if s.startswith(f"At {temperature} K ({name})")]
        rmsd, retention = analysis.final_window_rmsd_mean_angstrom, analysis.secondary_structure.retention
        assert f"the verdict was {analysis.assessment.verdict} (" in sentence
        assert f"final-window backbone RMSD {format_number(rmsd)} Å" in sentence
        assert f"secondary-structure retention {format_number(retention)}" in sentence
        production_ps = outcomes[name].result.simulated_ns * 1000.0
        assert f"over {format_number(production_ps)} ps of production" in sentence
    failed = outcomes["T600-r1"].result
    assert f"At 600 K (T600-r1) the run failed (instability): {failed.message}." in sentences
    cold, warm = _rmsd(outcomes, "T300-r1"), _rmsd(outcomes, "T350-r1")
    change = "higher" if warm > cold else "lower"
    [comparison] = [s for s in sentences if s.startswith("Compared with the reference")]
    assert comparison.startswith("Compared with the reference at 300 K (T300-r1), at 350 K (T350-r1) ")
    assert (
        f"the final-window backbone RMSD was {format_number(abs(warm - cold))} Å {change} "
        f"({format_number(warm)} vs {format_number(cold)} Å)"
    ) in comparison


def test_findings_pass_the_attribution_check(record) -> None:
    pool = study_values(record)
    sentences = findings(record)
    for sentence in sentences:  # each on its own, so no sentence leans on another's conditions
        check = check_text(sentence, pool)
        assert check.flagged == [], (sentence, check.flagged)
    together = check_text(" ".join(sentences), pool)
    assert together.flagged == [] and together.attributed >= 8


def _sections(markdown: str) -> dict[str, str]:
    """The report's level-2 sections by title."""
    parts = re.split(r"^## (.+)$", markdown, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("The protein stayed folded at every temperature. " * 5, "repeated one sentence 5 times"),
        (
            "The villin headpiece is a fast-folding helical domain, which is why it is a popular model "
            "system for simulations of protein folding.",
            "cites no value computed in the study",
        ),
        ("Looks stable.", "is trivially short, 2 words"),
    ],
)
def test_a_degenerate_interpretation_is_set_aside_for_the_findings(
    record, tmp_path: Path, text: str, why: str
) -> None:
    files = render_report(record.model_copy(update={"interpretation": text.strip()}), tmp_path)
    results = json.loads(files.results_json.read_text())
    assert results["interpretation_set_aside"].startswith(why)
    assert results["findings"] == findings(record)
    sections = _sections(files.markdown.read_text())
    assert f"*{FINDINGS_LABEL.capitalize()}.*" in sections["Findings"]
    assert all(f"- {sentence}" in sections["Findings"] for sentence in findings(record))
    assert f"The model's interpretation was set aside: it {why}" in sections["Interpretation"]
    assert "Interpretation — model-written" not in sections["Interpretation"]
    appendix = sections["Appendix: the model's interpretation, set aside"]
    assert f"Interpretation — model-written ({MODEL_ID}), not used" in appendix
    assert " ".join(text.split()[:4]) in appendix
    html = unescape(files.html.read_text())
    before, after = html.split("<h2>Appendix: the model's interpretation, set aside</h2>")
    assert f"The model's interpretation was set aside: it {why}" in before
    assert "Interpretation — model-written" not in before and "Interpretation — model-written" in after
    assert f"Findings — {FINDINGS_LABEL}" in before


def test_a_degenerate_rationale_is_not_shown_as_one(record, tmp_path: Path) -> None:
    files = render_report(record.model_copy(update={"rationale": "false"}), tmp_path)
    statement = "the model gave no usable rationale: 'false' (it is trivially short, 1 word)"
    for text in (files.markdown.read_text(), unescape(files.html.read_text())):
        assert statement in text
        assert "Rationale — model-written" not in text


def test_the_outlook_says_how_long_runs_must_be_and_the_command(report, record, tmp_path: Path) -> None:
    sentence = (
        "No verdict was possible within the budget (too short: 0.4 ps of production, 50 ps needed): runs "
        "of at least 50 ps are needed (about 6 min at the measured speed)."
    )
    markdown, html = report.markdown.read_text(), unescape(report.html.read_text())
    assert f"**{sentence}** To get one: `sciagent run --budget 12m`" in markdown
    assert f"<strong>{sentence}</strong> To get one: <code>sciagent run --budget 12m</code>" in html
    without = render_report(record.model_copy(update={"outlook": None}), tmp_path)
    assert "No verdict was possible within the budget" not in without.markdown.read_text()
