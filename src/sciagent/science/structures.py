"""Resolve what the user names (a path, a bundled name, a PDB id, a protein name) into a local structure file.

Resolution order in :func:`resolve_structure`:

1. an existing file path (or a path-like name with a structure suffix, which must exist);
2. a bundled structure (``villin``), written once as a protein-only copy into the cache, so it works offline;
3. a four-character PDB id (``1UBQ``), downloaded from RCSB (or ``SCIAGENT_PDB_URL``) and cached;
4. a common protein name (``ubiquitin``, ``trp-cage``) mapped to its PDB id in :data:`PROTEIN_PDB_IDS`.

The bare name ``villin`` resolves to the bundled file, not to its PDB entry 1YRF, so the default example never
needs the network; ask for ``1YRF`` to get the crystal structure.
This module needs only the standard library, platformdirs and OpenMM, so it runs on a bare remote worker.
"""

from __future__ import annotations

import http.client
import importlib.resources
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sciagent.atomic import write_atomic
from sciagent.errors import StructureError

DEFAULT_PDB_URL = "https://files.rcsb.org/download"

STRUCTURE_SUFFIXES = (".pdb", ".cif", ".mmcif", ".pdbx", ".ent")

BUNDLED_STRUCTURES: dict[str, str] = {
    "villin": "villin headpiece HP35 (N68H), 35 residues, 582 atoms with hydrogens; from OpenMM's test.pdb",
}

PROTEIN_PDB_IDS: dict[str, str] = {
    "ubiquitin": "1UBQ",
    "lysozyme": "1AKI",  # hen egg-white lysozyme
    "t4-lysozyme": "2LZM",
    "insulin": "4INS",
    "myoglobin": "1MBN",
    "trp-cage": "1L2Y",
    "villin": "1YRF",  # HP35 crystal structure; the bare name resolves to the bundled file instead
    "chignolin": "1UAO",
    "bpti": "5PTI",
    "p53": "2OCJ",  # DNA-binding (core) domain
    "crambin": "1CRN",
    "protein-g": "1PGA",
    "gb1": "1PGA",
    "calmodulin": "1CLL",
    "hemoglobin": "4HHB",
    "gfp": "1EMA",
    "barnase": "1A2P",
}

_PDB_ID = re.compile(r"^[0-9][A-Za-z0-9]{3}$")
_BUNDLED_LABELS = {"villin": "villin headpiece HP35 (bundled: OpenMM test.pdb)"}
_SOLVENT_AND_IONS = frozenset({"HOH", "WAT", "SOL", "Cl", "CL", "Na", "NA", "K", "MG", "CA", "ZN"})


@dataclass(frozen=True)
class StructureFile:
    """A local structure file and where it came from, so reports can say what was simulated."""

    path: Path
    source: Literal["file", "bundled", "pdb"]
    label: str
    pdb_id: str | None = None


def resolve_structure(
    name: str, *, cache_dir: Path | None = None, base_url: str | None = None
) -> StructureFile:
    """Turn a user's structure name into a local file, downloading and caching when needed.

    Args:
        name: a file path, a bundled name, a PDB id or a common protein name.
        cache_dir: where downloads and bundled copies live (default :func:`pdb_cache_dir`).
        base_url: PDB download server (default ``$SCIAGENT_PDB_URL`` or RCSB).

    Raises:
        StructureError: the name matches nothing, or the file is missing, or the download failed.
    """
    text = name.strip()
    path = Path(text).expanduser()
    if path.is_file():
        return StructureFile(
            path=path.resolve(), source="file", label=f"{path.name} (file: {path.resolve()})"
        )
    if path.suffix.lower() in STRUCTURE_SUFFIXES:
        raise StructureError(f"structure file {text} not found: check the path")
    key = _normalise(text)
    if key in _bundled_keys():
        return _bundled(_bundled_keys()[key], cache_dir or pdb_cache_dir())
    if _PDB_ID.match(text):
        return _from_pdb(text.upper(), text.upper(), cache_dir, base_url)
    if key in _protein_keys():
        protein, pdb_id = _protein_keys()[key]
        return _from_pdb(pdb_id, f"{protein}: {pdb_id}", cache_dir, base_url)
    raise StructureError(
        f"unknown structure '{text}': not a file, a bundled name ({', '.join(BUNDLED_STRUCTURES)}), "
        "a PDB id or a known protein name; run `sciagent structures` to list them"
    )


def pdb_cache_dir() -> Path:
    """Where downloaded PDB entries are cached: ``$SCIAGENT_CACHE_DIR/pdb`` or the user cache directory."""
    root = os.environ.get("SCIAGENT_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "pdb"
    import platformdirs

    return Path(platformdirs.user_cache_dir("sciagent")) / "pdb"


def fetch_pdb(
    pdb_id: str, *, cache_dir: Path | None = None, base_url: str | None = None, timeout: float = 30.0
) -> Path:
    """Return a cached PDB entry, downloading it (mmCIF first, then PDB format) when it is not cached.

    A cached file is returned without touching the network, so prepared runs work offline.

    Raises:
        StructureError: not a PDB id, not found on the server, or unreachable and not cached.
    """
    if not _PDB_ID.match(pdb_id):
        raise StructureError(
            f"'{pdb_id}' is not a PDB id: use four characters starting with a digit, e.g. 1UBQ"
        )
    pdb_id = pdb_id.upper()
    directory = cache_dir or pdb_cache_dir()
    for suffix in (".cif", ".pdb"):
        cached = directory / f"{pdb_id}{suffix}"
        if cached.is_file() and cached.stat().st_size > 0:
            return cached
    base = (base_url or os.environ.get("SCIAGENT_PDB_URL") or DEFAULT_PDB_URL).rstrip("/")
    return _download_entry(pdb_id, base, directory, timeout)


def _download_entry(pdb_id: str, base: str, directory: Path, timeout: float) -> Path:
    """Try ``{ID}.cif`` then ``{ID}.pdb``; a 404 or a bad body moves on to the next format."""
    bad_body = ""
    for suffix in (".cif", ".pdb"):
        url = f"{base}/{pdb_id}{suffix}"
        try:
            body = _http_get(url, timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                continue
            raise _download_error(pdb_id, base, f"HTTP {exc.code} for {url}") from exc
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise _download_error(pdb_id, base, _reason(exc)) from exc
        problem = _body_problem(body)
        if problem:
            bad_body = f"{url} returned {problem}"
            continue
        return write_atomic(directory / f"{pdb_id}{suffix}", body)
    if bad_body:
        raise StructureError(
            f"the server at {base} sent no structure for {pdb_id} ({bad_body}): "
            "check SCIAGENT_PDB_URL points at a PDB file mirror, or pass a local file path"
        )
    raise StructureError(f"PDB id {pdb_id} was not found at {base}: check the id")


def _http_get(url: str, timeout: float) -> bytes:
    """The one network call in this module (the seam tests point at a local server)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _download_error(pdb_id: str, base: str, reason: str) -> StructureError:
    return StructureError(
        f"could not download {pdb_id} from {base} ({reason}) and it is not cached: connect to the internet, "
        "set SCIAGENT_PDB_URL to a reachable mirror, or pass a local file path"
    )


def _reason(exc: BaseException) -> str:
    """A one-line reason for a connection failure (URLError wraps the socket error in ``reason``)."""
    inner = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    text = str(inner).splitlines()[0] if str(inner) else ""
    return f"{type(inner).__name__}: {text}" if text else type(inner).__name__


def _body_problem(body: bytes) -> str:
    """Why a downloaded body is not a structure file ('' when it looks fine): empty, or an HTML page."""
    head = body[:512].lstrip().lower()
    if not head:
        return "an empty body"
    if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body")):
        return "an HTML page"
    return ""


def _from_pdb(pdb_id: str, what: str, cache_dir: Path | None, base_url: str | None) -> StructureFile:
    path = fetch_pdb(pdb_id, cache_dir=cache_dir, base_url=base_url)
    return StructureFile(path=path, source="pdb", label=f"{what} (RCSB PDB, cached at {path})", pdb_id=pdb_id)


def _normalise(name: str) -> str:
    """Case-, space-, dash- and underscore-insensitive key, so 'Trp cage' matches 'trp-cage'."""
    return re.sub(r"[-_\s]+", "", name).lower()


# Other names people (and models) use for a bundled structure.
BUNDLED_ALIASES = {"villin headpiece": "villin", "hp35": "villin", "villin hp35": "villin"}


def _bundled_keys() -> dict[str, str]:
    keys = {_normalise(name): name for name in BUNDLED_STRUCTURES}
    return keys | {_normalise(alias): name for alias, name in BUNDLED_ALIASES.items()}


def _protein_keys() -> dict[str, tuple[str, str]]:
    return {_normalise(name): (name, pdb_id) for name, pdb_id in PROTEIN_PDB_IDS.items()}


def _bundled(name: str, cache_dir: Path) -> StructureFile:
    """The bundled structure as a protein-only file under ``<cache_dir>/bundled/``, written once."""
    target = cache_dir / "bundled" / f"{name}.pdb"
    if not (target.is_file() and target.stat().st_size > 0):
        write_atomic(target, _protein_only_pdb(_openmm_test_pdb()))
    return StructureFile(path=target, source="bundled", label=_BUNDLED_LABELS[name])


def _openmm_test_pdb() -> Path:
    """OpenMM ships villin headpiece in water as ``openmm/app/data/test.pdb``."""
    return Path(str(importlib.resources.files("openmm.app") / "data" / "test.pdb"))


def _protein_only_pdb(source: Path) -> bytes:
    """PDB text of ``source`` without water and ions, and without the water box's unit cell."""
    import io

    from openmm import app

    pdb = app.PDBFile(str(source))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.delete([res for res in modeller.topology.residues() if res.name in _SOLVENT_AND_IONS])
    modeller.topology.setPeriodicBoxVectors(None)
    out = io.StringIO()
    app.PDBFile.writeFile(modeller.topology, modeller.positions, out)
    return out.getvalue().encode()
