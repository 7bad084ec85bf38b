"""MDSpec validation and its restart key."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sciagent.science.spec import MDSpec


def test_defaults_are_a_sensible_implicit_run() -> None:
    spec = MDSpec(structure="villin")
    assert (spec.solvent, spec.forcefield, spec.constraints, spec.timestep_fs) == (
        "implicit",
        "amber14",
        "hbonds",
        2.0,
    )
    assert spec.total_steps == spec.production_steps


@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature_k", -5), ("timestep_fs", 0), ("timestep_fs", 20), ("ph", 15), ("production_steps", 0)],
)
def test_out_of_range_values_are_rejected(field: str, value: float) -> None:
    with pytest.raises(ValidationError):
        MDSpec(structure="villin", **{field: value})


def test_unknown_field_is_rejected() -> None:
    with pytest.raises(ValidationError, match="extra"):
        MDSpec(structure="villin", temprature_k=300)


def test_report_interval_longer_than_production_is_rejected() -> None:
    with pytest.raises(ValidationError, match="report_interval"):
        MDSpec(structure="villin", production_steps=100, report_interval=500)


def test_implicit_model_with_explicit_solvent_is_rejected() -> None:
    with pytest.raises(ValidationError, match="implicit_model"):
        MDSpec(structure="villin", solvent="explicit", implicit_model="gbn2")


def test_unknown_residues_are_kept_unless_removal_is_asked_for() -> None:
    assert MDSpec(structure="villin").remove_unknown_residues is False
    assert "breaks the chain" in MDSpec.model_fields["remove_unknown_residues"].description


def test_spec_round_trips_through_json_and_is_hashable() -> None:
    spec = MDSpec(structure="villin", chains=("A",), temperature_k=350)
    again = MDSpec.model_validate_json(spec.model_dump_json())
    assert again == spec
    assert hash(again) == hash(spec)


def test_restart_key_ignores_what_a_resume_may_change_but_not_the_physics() -> None:
    base = MDSpec(structure="villin")
    resumable = base.model_copy(
        update={"production_steps": 10_000, "max_wall_time_s": 60.0, "cpu_threads": 1}
    )
    assert resumable.restart_key() == base.restart_key()
    changes = (
        {"temperature_k": 310.0},
        {"timestep_fs": 1.0},
        {"seed": 2},
        {"report_interval": 10},
        {"remove_unknown_residues": True},  # another structure: the chain is split where a residue was
    )
    for change in changes:
        assert base.model_copy(update=change).restart_key() != base.restart_key(), change
