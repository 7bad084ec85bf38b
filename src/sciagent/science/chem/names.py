"""A molecule's name to SMILES: a local cache, then PubChem, then (offline) a bundled table.

Every answer says where it came from (``source``), so a report can tell a PubChem answer from the
bundled table's. The PubChem base URL is overridable (``SCIAGENT_PUBCHEM_URL``) for mirrors and tests.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from sciagent.errors import StructureError

PUBCHEM_URL = "https://pubchem.ncbi.nlm.nih.gov/rest/pug"
_TIMEOUT_S = 10.0

# name -> (SMILES, PubChem CID). Provenance: the PubChem compound records of these CIDs
# (https://pubchem.ncbi.nlm.nih.gov/compound/<CID>), their connectivity SMILES written out in 2026-12 on
# a machine that cannot reach PubChem, so not fetched: tests/test_chem_science.py checks each against
# its molecular formula with RDKit. Refresh from PubChem when adding entries.
BUNDLED_MOLECULES: dict[str, tuple[str, int]] = {
    "water": ("O", 962),
    "methane": ("C", 297),
    "ethanol": ("CCO", 702),
    "methanol": ("CO", 887),
    "ammonia": ("N", 222),
    "carbon dioxide": ("C(=O)=O", 280),
    "benzene": ("C1=CC=CC=C1", 241),
    "acetone": ("CC(=O)C", 180),
    "acetic acid": ("CC(=O)O", 176),
    "aspirin": ("CC(=O)OC1=CC=CC=C1C(=O)O", 2244),
    "caffeine": ("CN1C=NC2=C1C(=O)N(C(=O)N2C)C", 2519),
    "glycine": ("C(C(=O)O)N", 750),
}
BUNDLED_SOURCE = "bundled table (PubChem CID {cid}; written from its record, not fetched)"


class ResolvedMolecule(BaseModel):
    """What a name or SMILES resolved to, and from where."""

    query: str
    smiles: str
    source: str
    kind: Literal["name", "smiles"]
    cid: int | None = None
    note: str | None = None


def cache_dir() -> Path:
    """``SCIAGENT_CHEM_CACHE`` or ``~/.cache/sciagent/chem``: PubChem answers and MACE weights."""
    override = os.environ.get("SCIAGENT_CHEM_CACHE")
    return Path(override) if override else Path.home() / ".cache" / "sciagent" / "chem"


def _cache_file() -> Path:
    return cache_dir() / "pubchem.json"


def _read_cache() -> dict[str, dict]:
    try:
        return json.loads(_cache_file().read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _write_cache(name: str, smiles: str, cid: int | None) -> None:
    entries = _read_cache()
    entries[name] = {"smiles": smiles, "cid": cid}
    path = _cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
    tmp.replace(path)


class PubChemUnreachable(Exception):
    """PubChem could not be asked (offline, DNS, timeout, 5xx); the bundled table may answer."""


def fetch_pubchem(name: str, base_url: str | None = None) -> tuple[str, int | None]:
    """``(SMILES, CID)`` for ``name`` from PubChem's PUG REST.

    Raises:
        StructureError: PubChem does not know the name (HTTP 404) or answered something unreadable.
        PubChemUnreachable: PubChem could not be reached.
    """
    base = (base_url or os.environ.get("SCIAGENT_PUBCHEM_URL") or PUBCHEM_URL).rstrip("/")
    url = f"{base}/compound/name/{urllib.parse.quote(name, safe='')}/property/SMILES/JSON"
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            payload = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code in (400, 404):
            raise StructureError(
                f"PubChem does not know the molecule {name!r}: check the spelling, or give its SMILES"
            ) from exc
        raise PubChemUnreachable(f"PubChem answered HTTP {exc.code}") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PubChemUnreachable(f"PubChem could not be reached at {base} ({reason})") from exc
    except json.JSONDecodeError as exc:
        raise StructureError(f"PubChem's answer for {name!r} is not JSON") from exc
    try:
        record = payload["PropertyTable"]["Properties"][0]
    except (KeyError, IndexError, TypeError) as exc:
        raise StructureError(f"PubChem's answer for {name!r} has no property table") from exc
    for key in ("SMILES", "IsomericSMILES", "CanonicalSMILES", "ConnectivitySMILES"):
        if isinstance(record.get(key), str):
            return record[key], record.get("CID")
    raise StructureError(f"PubChem's answer for {name!r} has no SMILES")


def molecule_to_smiles(name: str, base_url: str | None = None) -> ResolvedMolecule:
    """A molecule name to SMILES: the cache, then PubChem (cached), then the bundled table when
    PubChem cannot be reached.

    Raises:
        StructureError: PubChem does not know the name, or PubChem is unreachable and the bundled table
            does not have it either (the message says both).
    """
    key = name.strip().lower()
    if not key:
        raise StructureError("empty molecule name: give a name such as 'water' or a SMILES such as 'CCO'")
    cached = _read_cache().get(key)
    if cached:
        return ResolvedMolecule(
            query=name, smiles=cached["smiles"], cid=cached.get("cid"), source="PubChem (cached)", kind="name"
        )
    try:
        smiles, cid = fetch_pubchem(key, base_url)
    except PubChemUnreachable as exc:
        if key in BUNDLED_MOLECULES:
            smiles, cid = BUNDLED_MOLECULES[key]
            return ResolvedMolecule(
                query=name,
                smiles=smiles,
                cid=cid,
                kind="name",
                source=BUNDLED_SOURCE.format(cid=cid),
                note=f"{exc}; used the bundled table",
            )
        known = ", ".join(sorted(BUNDLED_MOLECULES))
        raise StructureError(
            f"cannot resolve {name!r}: {exc}, and the offline table has only {known}; give a SMILES instead"
        ) from exc
    _write_cache(key, smiles, cid)
    return ResolvedMolecule(query=name, smiles=smiles, cid=cid, source="PubChem", kind="name")


def _parses_as_smiles(text: str) -> bool:
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    try:
        return " " not in text and Chem.MolFromSmiles(text) is not None
    finally:
        RDLogger.EnableLog("rdApp.*")


def resolve(text: str, base_url: str | None = None) -> ResolvedMolecule:
    """A name or a SMILES to SMILES. A name of the bundled table is a name ("CO" would otherwise be
    methanol's SMILES and carbon monoxide's name); else text RDKit parses is a SMILES; else a name."""
    stripped = text.strip()
    if stripped.lower() not in BUNDLED_MOLECULES and stripped and _parses_as_smiles(stripped):
        return ResolvedMolecule(query=text, smiles=stripped, source="given as SMILES", kind="smiles")
    return molecule_to_smiles(stripped, base_url)
