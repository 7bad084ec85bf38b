"""The stability verdict: its rules, its thresholds and the RMSD drift test, in one documented place.

``assess_stability`` judges a run from numbers already computed (production length and frames, the
final-window mean backbone RMSD, the RMSD drift, secondary-structure retention, mean temperature), so
the rule is testable without a trajectory; ``StabilityThresholds`` holds every threshold it applies,
with the reasoning behind each value. ``rmsd_drift`` is the drift test on an RMSD series. Lengths
follow the field names: ``_angstrom`` in ångström, ``_ps`` in picoseconds.

This module imports only numpy and pydantic so it runs on a bare remote worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
from pydantic import BaseModel

PS_PER_NS = 1000.0

Verdict = Literal["stable", "unstable", "inconclusive"]
# What a failed criterion means; a workflow acts on these (a run "too short" or "still drifting" is
# worth extending, one whose fold is lost is not).
Failure = Literal[
    "too short", "fold lost", "still drifting", "secondary structure lost", "thermostat did not equilibrate"
]


@dataclass(frozen=True)
class StabilityThresholds:
    """Every threshold of the stability verdict, and the production it needs, in one documented place.

    A report prints them; a study's guardrails read ``min_production_ps`` so that no plan is shorter
    than what a verdict needs. References for the drift test: block averaging, H. Flyvbjerg and H. G.
    Petersen, J. Chem. Phys. 91, 461 (1989); convergence of biomolecular simulations, A. Grossfield and
    D. M. Zuckerman, Annu. Rep. Comput. Chem. 5, 23 (2009).
    """

    # Shortest production, in ps, from which a verdict is drawn; a shorter run is "inconclusive: too
    # short" whatever it shows. 50 ps is what the drift test below needs for the default study (villin
    # headpiece, 35 residues, implicit solvent): the first half absorbs the relaxation away from the
    # experimental structure (at 300 K the backbone RMSD levels off after 15-20 ps), and the last half
    # gives five blocks of 5 ps, each longer than the correlation time of the backbone RMSD of the
    # folded protein (about 3 ps at 300 K, estimated on four 50 ps runs), so their means are roughly
    # independent, as block averaging assumes (the drift test's look-ahead allows for the rest). A
    # verdict on this scale means "no fast loss of the fold", the question an elevated temperature
    # asks; unfolding at room temperature is far slower than any run here.
    min_production_ps: float = 50.0
    # Share of production frames (the last ones) over which "where the run ended up" is measured.
    # The last quarter lets the first three quarters serve as relaxation away from the start.
    final_window_fraction: float = 0.25
    # Mean backbone RMSD to the starting structure over the final window, above which the fold is
    # considered lost. Folded small proteins typically plateau at 1-3 Å from their experimental
    # structure; beyond 3 Å a domain of tens of residues has rearranged, not just breathed.
    rmsd_stable_max_angstrom: float = 3.0
    # Share of production frames (the last ones) in which the drift test looks for a trend: half, so
    # it holds several blocks longer than the RMSD's correlation time and starts after the relaxation.
    drift_window_fraction: float = 0.5
    # Contiguous blocks the drift window is cut into. A line is fitted through the block means; their
    # scatter about it estimates the trend's standard error. Raw frames (every 0.5 ps or so) are
    # strongly correlated, so a fit through them would take breathing for a trend with high confidence;
    # block means average that correlation out (Flyvbjerg & Petersen). Five blocks leave 3 degrees of
    # freedom for the scatter, and fewer than 3 blocks leave none.
    drift_blocks: int = 5
    # The RMSD is still drifting when its fitted rise across the window exceeds this many standard
    # errors... 3.18 is Student's two-sided 95% t quantile for drift_blocks - 2 = 3 degrees of freedom,
    # so with independent blocks a run fluctuating about a plateau fails this part one time in 20.
    # Change it together with drift_blocks.
    drift_significance: float = 3.18
    # ...and also exceeds this many ångström: a settled fold breathes by a few tenths of an Å (backbone
    # RMSD fluctuations of 0.2-0.5 Å), so a significant but smaller change is no structural trend...
    drift_tolerance_angstrom: float = 0.5
    # ...and the rise, continued at its rate for one more drift window, takes the last block's mean
    # past rmsd_stable_max_angstrom: only then could running longer change the verdict, which is what
    # "inconclusive" claims. A significant rise that stays below the threshold is the slow relaxation
    # from the experimental structure into the force field's own ensemble, which continues for tens
    # of ps: 300 K villin runs of 50 ps (4 seeds) rose by 0.1-0.9 Å across the window at a plateau of
    # 1.3-2.2 Å with backbone RMSD fluctuations of 0.3-0.4 Å and correlation times of several ps, and
    # a test on the rise alone called such runs still drifting one time in three. Blocks of 5 ps are
    # then not quite independent, which makes the significance part too eager; this part is not.
    drift_lookahead_windows: float = 1.0
    # Fraction of residues in helix or strand in the first production frame that are still in the same
    # class in the last. DSSP flickers at helix ends (one or two residues per end), which costs a small
    # protein up to about a quarter of its structured residues; below 0.7 an element has unwound.
    ss_retention_min: float = 0.7
    # Allowed relative deviation of the mean production temperature from the thermostat target. The
    # mean over many frames is far tighter than the instantaneous fluctuation (about T*sqrt(2/N_dof),
    # ~10 K for a small solvated protein), so a mean off by more than 5% means the system had not
    # reached the target temperature: the thermostat did not equilibrate it.
    temperature_tolerance_fraction: float = 0.05
    # Fewest production frames for a verdict: with 10 frames the drift window holds 5, one per block.
    min_frames: int = 10

    def __post_init__(self) -> None:
        """Reject thresholds that would make the verdict meaningless, before any analysis runs."""
        for name in ("final_window_fraction", "drift_window_fraction"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if not 0.0 <= self.ss_retention_min <= 1.0:
            raise ValueError(f"ss_retention_min must be in [0, 1], got {self.ss_retention_min}")
        if not (math.isfinite(self.min_production_ps) and self.min_production_ps >= 0.0):
            raise ValueError(f"min_production_ps must be a finite number >= 0, got {self.min_production_ps}")
        positive = (
            "rmsd_stable_max_angstrom",
            "drift_significance",
            "drift_tolerance_angstrom",
            "drift_lookahead_windows",
            "temperature_tolerance_fraction",
        )
        for name in positive:
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be a positive finite number, got {value}")
        if self.drift_blocks < 3:
            raise ValueError(
                f"drift_blocks must be at least 3 (a line through 2 has no scatter), got {self.drift_blocks}"
            )
        if math.ceil(self.drift_window_fraction * self.min_frames) < self.drift_blocks:
            raise ValueError(
                f"min_frames {self.min_frames} puts fewer than drift_blocks ({self.drift_blocks}) frames in"
                f" the drift window ({self.drift_window_fraction:g} of production): raise min_frames"
            )


DEFAULT_THRESHOLDS = StabilityThresholds()


class RmsdDrift(BaseModel):
    """How much the backbone RMSD still changed over the drift window, how sure that is, and where it leads.

    A line is fitted through the window's block means; ``change_angstrom`` is its rise from the first
    block's mid-time to the last's, ``standard_error_angstrom`` that rise's standard error from the
    block means' scatter about the line. ``projected_angstrom`` is the last block's mean plus the
    fitted rate over ``lookahead_ps`` more: where the RMSD is headed if the trend goes on.
    """

    window_ps: float  # length of the drift window, the last frames of production
    blocks: int
    change_angstrom: float
    standard_error_angstrom: float
    final_block_mean_angstrom: float
    lookahead_ps: float
    projected_angstrom: float


class StabilityAssessment(BaseModel):
    """The verdict, one reason per criterion (each quoting its number and threshold), and the failures."""

    verdict: Verdict
    reasons: list[str]
    failed: list[Failure]  # what each failed criterion means, in the order of the reasons


def rmsd_drift(
    time_ns: np.ndarray, rmsd_angstrom: np.ndarray, thresholds: StabilityThresholds = DEFAULT_THRESHOLDS
) -> RmsdDrift | None:
    """Fit a line through block means of the drift window's RMSD: its rise and that rise's standard error.

    The window is the last ``drift_window_fraction`` of frames (at least ``drift_blocks`` of them), cut
    into ``drift_blocks`` contiguous blocks (fewer if the window has fewer frames). The standard error
    comes from the block means' own scatter about the line (ordinary least squares, ``blocks - 2``
    degrees of freedom), which holds when blocks are longer than the RMSD's correlation time.

    Returns:
        None when fewer than 3 blocks can be formed: a line through 2 points has no scatter to judge by.
    """
    frames = len(rmsd_angstrom)
    fraction_frames = math.ceil(thresholds.drift_window_fraction * frames)
    window = min(frames, max(thresholds.drift_blocks, fraction_frames))
    blocks = min(thresholds.drift_blocks, window)
    if blocks < 3:
        return None
    t = np.array([b.mean() for b in np.array_split(np.asarray(time_ns[-window:], dtype=np.float64), blocks)])
    r = np.array(
        [b.mean() for b in np.array_split(np.asarray(rmsd_angstrom[-window:], dtype=np.float64), blocks)]
    )
    dt = t - t.mean()
    sxx = float(dt @ dt)
    slope = float(dt @ (r - r.mean())) / sxx
    residuals = r - r.mean() - slope * dt
    slope_error = math.sqrt(float(residuals @ residuals) / (blocks - 2) / sxx)
    span_ns = float(t[-1] - t[0])
    window_start_ns = float(time_ns[-window - 1]) if window < frames else 0.0
    window_ps = require_finite("drift window", (float(time_ns[-1]) - window_start_ns) * PS_PER_NS)
    lookahead_ps = thresholds.drift_lookahead_windows * window_ps
    return RmsdDrift(
        window_ps=window_ps,
        blocks=blocks,
        change_angstrom=require_finite("RMSD drift", slope * span_ns),
        standard_error_angstrom=require_finite("RMSD drift standard error", slope_error * span_ns),
        final_block_mean_angstrom=require_finite("last block's RMSD mean", float(r[-1])),
        lookahead_ps=lookahead_ps,
        projected_angstrom=require_finite("projected RMSD", float(r[-1]) + slope * lookahead_ps / PS_PER_NS),
    )


def assess_stability(
    *,
    frames: int,
    production_ps: float,
    final_window_rmsd_mean_angstrom: float,
    rmsd_drift: RmsdDrift | None,
    ss_retention: float | None,
    mean_temperature_k: float,
    target_temperature_k: float,
    thresholds: StabilityThresholds = DEFAULT_THRESHOLDS,
) -> StabilityAssessment:
    """Judge stability from computed numbers, so the rule is testable without a trajectory.

    Rule, in order of precedence:

    - **unstable** if the final-window mean backbone RMSD exceeds ``rmsd_stable_max_angstrom`` or the
      secondary-structure retention is below ``ss_retention_min`` (the fold was lost; running longer
      will not bring it back, so this wins over "inconclusive");
    - **inconclusive** if production is shorter than ``min_production_ps`` or has fewer than
      ``min_frames`` frames or too few for the drift test (too short to judge), or the RMSD is still
      rising towards a lost fold (see ``_drift_check``; a workflow extends the run), or the mean
      temperature is off target by more than ``temperature_tolerance_fraction`` (the thermostat did
      not equilibrate the system, so the structure was not sampled at the intended temperature);
    - **stable** otherwise.

    Every criterion is evaluated and gets a reason, whether it passed or not; a retention of None
    (nothing structured in the first frame) is reported as not applicable and decides nothing.
    """
    t = thresholds
    checks = [
        _check(
            "inconclusive",
            f"production {production_ps:.4g} ps",
            f"minimum {t.min_production_ps:g} ps",
            production_ps < t.min_production_ps,
            "too short",
        ),
        _check(
            "inconclusive",
            f"production frames {frames}",
            f"minimum {t.min_frames}",
            frames < t.min_frames,
            "too short",
        ),
        _check(
            "unstable",
            f"final-window mean backbone RMSD {final_window_rmsd_mean_angstrom:.3g} Å",
            f"maximum {t.rmsd_stable_max_angstrom:g} Å",
            final_window_rmsd_mean_angstrom > t.rmsd_stable_max_angstrom,
            "fold lost",
        ),
        _drift_check(rmsd_drift, t),
        _retention_check(ss_retention, t),
        _temperature_check(mean_temperature_k, target_temperature_k, t),
    ]
    failed = [c.failure for c in checks if c.failed]
    forced = {c.forces for c in checks if c.failed}
    verdict: Verdict = "unstable" if "unstable" in forced else "inconclusive" if forced else "stable"
    return StabilityAssessment(verdict=verdict, reasons=[c.reason for c in checks], failed=failed)


class _Criterion(NamedTuple):
    """One evaluated criterion: the verdict it forces if failed, its failure, whether it failed, why."""

    forces: Verdict
    failure: Failure
    failed: bool
    reason: str


def _check(forces: Verdict, measured: str, threshold: str, failed: bool, failure: Failure) -> _Criterion:
    """One criterion with its reason line.

    Reasons share one shape, ``<measured> (<threshold>): ok | <failure>``, so a report can tabulate them.
    """
    return _Criterion(forces, failure, failed, f"{measured} ({threshold}): {failure if failed else 'ok'}")


def _drift_check(drift: RmsdDrift | None, t: StabilityThresholds) -> _Criterion:
    """Still drifting: the RMSD rises significantly and by much, on course to a lost fold.

    Significant: beyond ``drift_significance`` standard errors (a t test of the block means' trend);
    large: beyond ``drift_tolerance_angstrom``, so the limit is the larger of the two; on course: the
    rise continued for ``drift_lookahead_windows`` windows passes ``rmsd_stable_max_angstrom``. A
    falling RMSD never makes a run inconclusive: more of it would not lose the fold. Without a drift
    (too few frames for 3 blocks) the run is too short to say.
    """
    if drift is None:
        return _Criterion(
            "inconclusive",
            "too short",
            True,
            "backbone RMSD drift: fewer than 3 frames in the drift window: too short",
        )
    limit = max(t.drift_tolerance_angstrom, t.drift_significance * drift.standard_error_angstrom)
    return _check(
        "inconclusive",
        f"backbone RMSD drift over the last {drift.window_ps:.3g} ps, {drift.blocks} block means,"
        f" {drift.change_angstrom:.2g} ± {drift.standard_error_angstrom:.2g} Å, on course for"
        f" {drift.projected_angstrom:.3g} Å {drift.lookahead_ps:.3g} ps on",
        f"drifting: a rise beyond {t.drift_tolerance_angstrom:g} Å and {t.drift_significance:g} standard"
        f" errors, here {limit:.2g} Å, on course past {t.rmsd_stable_max_angstrom:g} Å",
        drift.change_angstrom > limit and drift.projected_angstrom > t.rmsd_stable_max_angstrom,
        "still drifting",
    )


def _retention_check(ss_retention: float | None, t: StabilityThresholds) -> _Criterion:
    """Secondary structure lost; not applicable (never failed) when nothing was structured at first."""
    if ss_retention is None:
        reason = "secondary-structure retention: not applicable (no helix or strand in the first frame)"
        return _Criterion("unstable", "secondary structure lost", False, reason)
    return _check(
        "unstable",
        f"secondary-structure retention {ss_retention:.3g}",
        f"minimum {t.ss_retention_min:g}",
        ss_retention < t.ss_retention_min,
        "secondary structure lost",
    )


def _temperature_check(mean_k: float, target_k: float, t: StabilityThresholds) -> _Criterion:
    """The thermostat did not equilibrate: the mean production temperature is off its target."""
    tolerance_k = t.temperature_tolerance_fraction * target_k
    return _check(
        "inconclusive",
        f"mean temperature {mean_k:.4g} K",
        f"target {target_k:g} K ± {t.temperature_tolerance_fraction:.0%} ({tolerance_k:.3g} K)",
        abs(mean_k - target_k) > tolerance_k,
        "thermostat did not equilibrate",
    )


def require_finite(name: str, value: float) -> float:
    """Return value as a plain float, or raise: a NaN must never reach a result."""
    if not math.isfinite(value):
        raise ValueError(f"{name} is not finite ({value})")
    return float(value)
