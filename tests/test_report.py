"""Reports rendered from real villin runs: two that complete, one that blows up, and the number check."""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

import pytest

from sciagent.errors import UserError
from sciagent.report.models import (
    Adaptation,
    ConditionRecord,
    GuardrailChange,
    Provenance,
    StudyRecord,
)
from sciagent.report.numbers import (
    allowed_numbers,
    check_numbers,
    find_numbers,
    number_check,
)
from sciagent.report.render import load_record, render_report
from sciagent.report.tables import MISSING, condition_rows, display_cells, format_number
from sciagent.science.simulate import SimulationOutcome, simulate_and_analyze
from sciagent.science.spec import MDSpec

MODEL_ID = "meta-llama/Meta-Llama-3.1-8B-Instruct"
WRONG = "9.876"  # an RMSD no run produced: three decimals, so nothing in the data matches by chance
MINUS, TIMES, EN_DASH = "\u2212", "\u00d7", "\u2013"
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
        assert row["final_window_rmsd_mean_angstrom"] == analysis.final_window_rmsd_mean_angstrom
        assert row["rg_mean_nm"] == analysis.rg_mean_nm
        assert row["max_rmsf_angstrom"] == analysis.max_rmsf_angstrom
        assert row["ss_retention"] == analysis.secondary_structure.retention
        assert row["potential_energy_drift_kj_mol_per_ns"] == analysis.potential_energy_kj_mol.drift_per_ns
        assert row["mean_temperature_k"] == analysis.temperature_k.mean
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
    check = json.loads(report.results_json.read_text())["number_check"]
    assert [f["text"] for f in check["flagged"]] == [WRONG]
    assert check["checked"] == len(find_numbers(record.interpretation)) == 7
    markdown, html = report.markdown.read_text(), report.html.read_text()
    assert f"**{WRONG}**[^nd1]" in markdown and "[^nd1]: ⚠ not in the data" in markdown
    assert f'<mark title="not in the data">{WRONG}</mark>' in html
    right = record.interpretation.split("RMSD was ")[1].split(" ")[0]
    assert f'<mark title="not in the data">{right}' not in html and f"**{right}**" not in markdown
    for text in (markdown, html):
        assert "Numbers checked against the data: 7; not found in the data: 1." in text


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


def test_allowed_numbers_hold_the_table_counts_and_plan_but_not_model_text(record) -> None:
    allowed = allowed_numbers(record)
    row = condition_rows(record)[0]
    assert row.final_window_rmsd_mean_angstrom in allowed and row.ns_per_day in allowed
    assert {3.0, 2.0, 1.0, 1200.0, 600.0, 12.25} <= allowed  # counts, guardrail, plan, wall time
    assert abs(row.temperature_deviation_k) in allowed  # "105 K below the target"
    assert 9.876 not in allowed


# --- check_numbers: the matching rule ----------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "flagged"),
    [
        ("0.47", False),  # 0.4708 rounds to 0.47
        ("0.471", False),
        ("0.4708", False),
        ("0.5", False),
        ("0.48", True),  # 0.4708 rounds to 0.47, not 0.48
        ("0.4709", True),
        ("0.470", True),  # three decimals claim 0.470 ± 0.0005
        ("1", True),
        ("0.125", False),  # exact tie with 0.1245 written half-up ...
        ("0.124", False),  # ... or half-even: both pass
    ],
)
def test_a_number_matches_when_the_value_rounds_to_it(written: str, flagged: bool) -> None:
    assert bool(check_numbers(f"RMSD {written} Å", [0.4708, 0.1245])) is flagged


def test_units_percentages_and_thousands() -> None:
    allowed = [300.0, 0.9545, 1385.0, 0.05]
    assert check_numbers("300 K, 300K, 95%, 95.45 %, 1,385 steps/s, 5% tolerance", allowed) == []
    assert [f.text for f in check_numbers("96% and 1,386", allowed)] == ["96%", "1,386"]


def test_negative_numbers_and_signs() -> None:
    allowed = [-3682.65, -105.09]
    assert check_numbers(f"E = -3682.6 kJ/mol, Δ {MINUS}105.1 K, {MINUS}3683", allowed) == []
    flagged = check_numbers("3682.6 kJ/mol and +105.1 K", allowed)
    assert [f.value for f in flagged] == [3682.6, 105.1]  # signs are checked here; allowed_numbers adds |v|


def test_scientific_notation_counts_decimals_of_the_mantissa() -> None:
    allowed = [0.00039999999999999996, 582.96]
    numbers = find_numbers(f"4.0e-4 ns, 4e-4, 5.8{TIMES}10^2, 5.83 {TIMES} 10², 1.2E+03")
    assert [(n.value, n.decimals) for n in numbers[:3]] == [
        (pytest.approx(4e-4), 5),
        (pytest.approx(4e-4), 4),
        (pytest.approx(580.0), -1),
    ]
    assert [
        f.text for f in check_numbers(f"4.0e-4 ns, 4e-4, 5.8{TIMES}10^2, 5.83 {TIMES} 10², 1.2E+03", allowed)
    ] == ["1.2E+03"]


def test_ranges_are_two_numbers() -> None:
    for text in (f"1.2{EN_DASH}1.5 Å", "1.2-1.5 Å", "1.2 to 1.5 Å", "between 1.2 and 1.5"):
        assert [n.value for n in find_numbers(text)] == [1.2, 1.5], text
    assert [f.text for f in check_numbers(f"RMSD 1.2{EN_DASH}1.6 Å", [1.2, 1.5])] == ["1.6"]


def test_identifiers_versions_and_list_markers_are_not_checked() -> None:
    text = "1. T300-r1 in H2O with OpenMM 8.6.1\n2) the rest\n  3. item\nfootnote[^1]"
    assert find_numbers(text) == []


def test_small_integers_are_checked_too() -> None:
    check = number_check("3 conditions, 2 completed, 4 replicas", [3.0, 2.0])
    assert check.checked == 3 and [f.text for f in check.flagged] == ["4"]
    assert check.flagged[0].nearest == 3.0


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
