"""What a question states, read deterministically: the values a planner fixes and a study holds."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sciagent.agent.stated import StatedValues, stated_values
from sciagent.agent.steps import with_structure

BASICS = Path(__file__).resolve().parents[1] / "src" / "sciagent" / "evals" / "basics.yaml"


@pytest.mark.parametrize(
    ("text", "temperatures"),
    [
        ("Is the villin headpiece stable at 300 K and at 400 K?", (300.0, 400.0)),
        ("Run it at 300 and 400 K.", (300.0, 400.0)),
        ("at 280 K, 300 K and 320 K", (280.0, 300.0, 320.0)),
        ("at 300, 350, and 400 K", (300.0, 350.0, 400.0)),
        ("between 300-400 K", (300.0, 400.0)),
        ("at 350K", (350.0,)),
        ("at 27 °C", (300.15,)),
        ("at 25 and 37 degrees Celsius", (298.15, 310.15)),
        ("at -20 °C", (253.15,)),
        ("at 300 kelvin", (300.0,)),
        ("a temperature of 310", (310.0,)),
        ("at 300 K (27 °C)", (300.0,)),  # the same temperature twice
        ("at 400 K, then again at 300 K and 400 K", (400.0, 300.0)),  # text order, each once
    ],
)
def test_temperatures_in_many_phrasings(text: str, temperatures: tuple[float, ...]) -> None:
    assert stated_values(text).temperatures_k == temperatures


@pytest.mark.parametrize(
    "text",
    [
        "The villin headpiece has 35 residues and 582 atoms.",
        "Clean it at pH 7.",
        "Run 5k steps, then 5K steps more.",
        "What fraction of this structure's residues is helical?",
        "Ubiquitin has 76 residues; 1UBQ is its id.",
        "Use K+ ions: 150 mM K+.",
    ],
)
def test_no_temperature_where_none_is_stated(text: str) -> None:
    """Counts, pH values, "5K steps" (thousands) and ion names are not temperatures."""
    assert stated_values(text).temperatures_k == ()


@pytest.mark.parametrize(
    ("text", "lengths"),
    [
        ("Simulate for 20 ps.", (20.0,)),
        ("a 1 ns run", (1000.0,)),
        ("for 2.5 ps", (2.5,)),
        ("for 1,000 ps", (1000.0,)),
        ("for 10 nanoseconds", (10000.0,)),
        ("for 0.5 µs", (500000.0,)),
        ("with a 2 fs time step for 500 fs", (0.5,)),  # the timestep is not a length
        ("save a frame every 10 ps of a 1 ns run", (1000.0,)),
        ("timestep of 4 fs", ()),
    ],
)
def test_lengths(text: str, lengths: tuple[float, ...]) -> None:
    assert stated_values(text).lengths_ps == lengths


@pytest.mark.parametrize(
    ("text", "ph"),
    [
        ("at pH 5 and pH 8", (5.0, 8.0)),
        ("at pH 7", (7.0,)),
        ("at pH 5 and 8", (5.0, 8.0)),
        ("at pH 5, 6 and 7.4", (5.0, 6.0, 7.4)),
        ("pH = 6.5", (6.5,)),
        ("at PH 7", (7.0,)),
        ("pH 7, 300 and 400 K", (7.0,)),  # 300 is no pH: it takes the list's kelvin
        ("the graph 5 shows", ()),
        ("at pH 70", ()),
    ],
)
def test_ph(text: str, ph: tuple[float, ...]) -> None:
    assert stated_values(text).ph == ph


def test_ph_and_temperature_lists_side_by_side() -> None:
    stated = stated_values("at pH 5 and 8, 300 K")
    assert (stated.ph, stated.temperatures_k) == ((5.0, 8.0), (300.0,))
    stated = stated_values("at pH 7, 300 and 400 K")
    assert (stated.ph, stated.temperatures_k) == ((7.0,), (300.0, 400.0))


@pytest.mark.parametrize(
    ("text", "pressures"),
    [
        ("at 1 bar", (1.0,)),
        ("at 1000 bar", (1000.0,)),
        ("at 1 atm", (1.01325,)),
        ("at 1 and 1000 bar", (1.0, 1000.0)),
        ("at 0.1 MPa", (1.0,)),
    ],
)
def test_pressures(text: str, pressures: tuple[float, ...]) -> None:
    assert stated_values(text).pressures_bar == pytest.approx(pressures)


@pytest.mark.parametrize(
    ("text", "solvent"),
    [
        ("in implicit solvent", "implicit"),
        ("with a generalized Born model", "implicit"),
        ("in explicit water", "explicit"),
        ("in a TIP3P water box", "explicit"),
        ("Is it stable in water?", "explicit"),
        ("in implicit water", "implicit"),
        ("in vacuum", "vacuum"),
        ("in the gas phase", "vacuum"),
        ("without solvent", "vacuum"),
        ("compare implicit and explicit solvent", None),  # two kinds: no one value
        ("in water and in vacuum", None),
        ("how many atoms?", None),
    ],
)
def test_solvent(text: str, solvent: str | None) -> None:
    assert stated_values(text).solvent == solvent


@pytest.mark.parametrize(
    ("text", "replicas"),
    [
        ("with 3 replicas", 3),
        ("three replicas each", 3),
        ("two independent runs per temperature", 2),
        ("in triplicate", 3),
        ("a single replica", 1),
        ("replicas: 2", 2),
        ("35 residues at 300 K", None),
    ],
)
def test_replicas(text: str, replicas: int | None) -> None:
    assert stated_values(text).replicas == replicas


@pytest.mark.parametrize(
    ("text", "structures"),
    [
        ("How many atoms does the villin headpiece have?", ("villin",)),
        ("Simulate HP35", ("villin",)),
        ("Load 1UBQ, then 1ubq again", ("1UBQ",)),
        ("the crystal structure of ubiquitin", ("ubiquitin",)),
        ("T4 lysozyme and the Trp-cage", ("t4-lysozyme", "trp-cage")),
        ("barnase (1A2P)", ("barnase", "1A2P")),
        ("THAT WORD and 300K, 10ns, 21st, 1000 and 2024", ()),
        ("the SmolLM2-135M model", ()),
        ("write out/1ubq.pdb", ()),  # a file, listed under files
    ],
)
def test_structures(text: str, structures: tuple[str, ...]) -> None:
    assert stated_values(text).structures == structures


def test_files_and_task_ids() -> None:
    stated = stated_values("Read `atoms.txt` and out/model.pdb, e.g. for sim-1 and sim-2 (not 1.5 or sim-x).")
    assert stated.files == ("atoms.txt", "out/model.pdb")
    assert stated.task_ids == ("sim-1", "sim-2")


def test_every_suite_prompt_states_what_its_checks_expect() -> None:
    """The shipped suite's own prompts: what each check's arguments name is read from the prompt."""
    suite = yaml.safe_load(BASICS.read_text())
    for task in suite["tasks"]:
        stated = stated_values(with_structure(task["prompt"], task.get("structure")))
        for check in task["checks"]:
            arguments = check.get("arguments", {}) if check["kind"] == "tool_called" else {}
            if "structure" in arguments:
                assert arguments["structure"] in stated.structures, task["id"]
            if "temperature_k" in arguments:
                assert arguments["temperature_k"] in stated.temperatures_k, task["id"]
            if "length_ps" in arguments:
                assert arguments["length_ps"] in stated.lengths_ps, task["id"]
            if "ph" in arguments:
                assert arguments["ph"] in stated.ph, task["id"]
            if "path" in arguments:
                assert arguments["path"] in stated.files, task["id"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Run a 1 ps simulation of this protein at 300 kelvin; has its secondary structure changed?",
            StatedValues(temperatures_k=(300.0,), lengths_ps=(1.0,)),
        ),
        (
            "Compare RMSF for ubiquitin at pH 5 and 8 (1 ps each)",
            StatedValues(lengths_ps=(1.0,), ph=(5.0, 8.0), structures=("ubiquitin",)),
        ),
        (
            "Radius of gyration of 1UBQ at 280, 300 and 320 K over 2 ps in implicit solvent, 2 replicas",
            StatedValues(
                temperatures_k=(280.0, 300.0, 320.0),
                lengths_ps=(2.0,),
                solvent="implicit",
                replicas=2,
                structures=("1UBQ",),
            ),
        ),
        (
            "Save the atom count of the villin headpiece to counts/atoms.txt",
            StatedValues(structures=("villin",), files=("counts/atoms.txt",)),
        ),
    ],
)
def test_rephrasings_of_the_suite(text: str, expected: StatedValues) -> None:
    assert stated_values(text) == expected


@pytest.mark.parametrize(
    "text", ["", "   ", "K K K", "pH", "1e999999 K", "9" * 5000 + " K", "°C ps ns,,, and and", "\x00\ud800"]
)
def test_never_raises(text: str) -> None:
    assert isinstance(stated_values(text), StatedValues)


def test_a_long_list_costs_its_length_not_its_square() -> None:
    """A bare number takes its list's unit in two linear passes (walking each list from each number
    took 340 s on 20,000 numbers)."""
    stated = stated_values("at " + "1 and " * 20_000 + "2 K")
    assert stated.temperatures_k == (1.0, 2.0)
