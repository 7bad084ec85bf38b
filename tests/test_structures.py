"""Structure resolution: bundled villin offline, name lookup, and downloads from a real local HTTP server."""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from openmm import app

from sciagent.errors import StructureError, UserError
from sciagent.science.structures import (
    BUNDLED_STRUCTURES,
    PROTEIN_PDB_IDS,
    StructureFile,
    fetch_pdb,
    pdb_cache_dir,
    resolve_structure,
)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own cache and never points at RCSB by accident."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SCIAGENT_CACHE_DIR", str(cache))
    monkeypatch.setenv("SCIAGENT_PDB_URL", "http://127.0.0.1:9/unused")
    return cache


@pytest.fixture(scope="module")
def villin_pdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return resolve_structure("villin", cache_dir=tmp_path_factory.mktemp("villin")).path


@pytest.fixture(scope="module")
def villin_cif(villin_pdb: Path) -> bytes:
    pdb = app.PDBFile(str(villin_pdb))
    out = villin_pdb.with_suffix(".cif")
    with out.open("w") as handle:
        app.PDBxFile.writeFile(pdb.topology, pdb.positions, handle)
    return out.read_bytes()


class _Server(ThreadingHTTPServer):
    files: dict[str, bytes]
    status: int
    hits: list[str]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(self.server.status)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""


@pytest.fixture
def pdb_server() -> Iterator[Callable[..., _Server]]:
    """Start a real HTTP server on 127.0.0.1 serving the given paths; other paths get ``status``."""
    servers: list[_Server] = []

    def start(files: dict[str, bytes], status: int = 404) -> _Server:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.files, server.status, server.hits = files, status, []
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _url(server: _Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/download"


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/download"


def _assert_one_line(exc: pytest.ExceptionInfo[StructureError]) -> None:
    assert isinstance(exc.value, UserError)
    assert "\n" not in str(exc.value)


# --- bundled, names, paths ---


def test_bundled_villin_is_protein_only_and_offline(_isolated_cache: Path) -> None:
    structure = resolve_structure("villin")
    assert structure.source == "bundled"
    assert structure.pdb_id is None
    assert structure.path == _isolated_cache / "pdb" / "bundled" / "villin.pdb"
    pdb = app.PDBFile(str(structure.path))
    names = {residue.name for residue in pdb.topology.residues()}
    assert pdb.topology.getNumResidues() == 35
    assert pdb.topology.getNumAtoms() == 582
    assert not names & {"HOH", "Cl", "CL", "NA"}
    assert sum(atom.element.symbol == "H" for atom in pdb.topology.atoms()) == 293
    assert pdb.topology.getPeriodicBoxVectors() is None


def test_bundled_copy_is_written_once_and_name_is_case_insensitive(tmp_path: Path) -> None:
    first = resolve_structure("villin", cache_dir=tmp_path)
    stamp = first.path.stat().st_mtime_ns
    again = resolve_structure("  VILLIN ", cache_dir=tmp_path)
    assert again == first
    assert again.path.stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "bundled").iterdir()] == ["villin.pdb"]


def test_name_tables_are_consistent() -> None:
    assert "villin" in BUNDLED_STRUCTURES
    assert PROTEIN_PDB_IDS["villin"] == "1YRF"
    for name, pdb_id in PROTEIN_PDB_IDS.items():
        assert len(pdb_id) == 4 and pdb_id[0].isdigit() and pdb_id == pdb_id.upper(), name


@pytest.mark.parametrize("name", ["trp-cage", "Trp Cage", "TRPCAGE", "trp_cage"])
def test_protein_names_map_to_cached_pdb_ids(name: str, tmp_path: Path, villin_pdb: Path) -> None:
    shutil.copy(villin_pdb, tmp_path / "1L2Y.pdb")
    structure = resolve_structure(name, cache_dir=tmp_path)
    assert structure.source == "pdb"
    assert structure.pdb_id == "1L2Y"
    assert structure.path == tmp_path / "1L2Y.pdb"
    assert "1L2Y" in structure.label


def test_existing_path_is_a_file(villin_pdb: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(villin_pdb.parent)
    structure = resolve_structure(villin_pdb.name)
    assert structure == StructureFile(path=villin_pdb, source="file", label=structure.label)
    assert villin_pdb.name in structure.label


@pytest.mark.parametrize("name", ["missing.pdb", "some/dir/1UBQ.cif", "x.mmcif", "y.ent"])
def test_missing_structure_file_is_a_user_error(name: str) -> None:
    with pytest.raises(StructureError, match="not found: check the path") as exc:
        resolve_structure(name)
    _assert_one_line(exc)


def test_unknown_name_points_at_the_structures_command() -> None:
    with pytest.raises(StructureError, match="unknown structure 'alphafoldium'") as exc:
        resolve_structure("alphafoldium")
    assert "`sciagent structures`" in str(exc.value)
    _assert_one_line(exc)


def test_pdb_cache_dir_follows_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert pdb_cache_dir() == tmp_path / "cache" / "pdb"
    monkeypatch.delenv("SCIAGENT_CACHE_DIR")
    assert pdb_cache_dir().parts[-2:] == ("sciagent", "pdb")


# --- downloads from a real local HTTP server ---


def test_download_once_then_served_from_cache(
    pdb_server: Callable[..., _Server], villin_cif: bytes, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = pdb_server({"/download/1ABC.cif": villin_cif})
    monkeypatch.setenv("SCIAGENT_PDB_URL", _url(server))
    structure = resolve_structure("1abc")
    assert structure.source == "pdb" and structure.pdb_id == "1ABC"
    assert structure.path == tmp_path / "cache" / "pdb" / "1ABC.cif"
    assert structure.path.read_bytes() == villin_cif
    assert server.hits == ["/download/1ABC.cif"]
    assert app.PDBxFile(str(structure.path)).topology.getNumAtoms() == 582
    server.shutdown()
    server.server_close()
    assert resolve_structure("1ABC") == structure


def test_falls_back_to_pdb_format_and_base_url_argument_wins(
    pdb_server: Callable[..., _Server], villin_pdb: Path, tmp_path: Path
) -> None:
    server = pdb_server({"/download/2XYZ.pdb": villin_pdb.read_bytes()})
    path = fetch_pdb("2xyz", cache_dir=tmp_path, base_url=_url(server) + "/")
    assert path == tmp_path / "2XYZ.pdb"
    assert server.hits == ["/download/2XYZ.cif", "/download/2XYZ.pdb"]
    assert path.read_bytes() == villin_pdb.read_bytes()


def test_not_found_on_server(pdb_server: Callable[..., _Server], tmp_path: Path) -> None:
    server = pdb_server({})
    with pytest.raises(
        StructureError, match=r"PDB id 9ZZZ was not found at http://127\.0\.0\.1:\d+/download"
    ) as exc:
        fetch_pdb("9zzz", cache_dir=tmp_path, base_url=_url(server))
    _assert_one_line(exc)
    assert not list(tmp_path.iterdir())


def test_unreachable_server_and_not_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCIAGENT_PDB_URL", _closed_port_url())
    with pytest.raises(StructureError, match=r"could not download 1UBQ from .*SCIAGENT_PDB_URL") as exc:
        resolve_structure("ubiquitin")
    _assert_one_line(exc)
    assert isinstance(exc.value.__cause__, OSError)


def test_server_error_is_a_download_failure(pdb_server: Callable[..., _Server], tmp_path: Path) -> None:
    server = pdb_server({}, status=503)
    with pytest.raises(StructureError, match=r"could not download 1UBQ .*HTTP 503"):
        fetch_pdb("1UBQ", cache_dir=tmp_path, base_url=_url(server))
    assert server.hits == ["/download/1UBQ.cif"]


@pytest.mark.parametrize("body", [b"<!DOCTYPE html><html><body>Maintenance</body></html>", b"", b"  \n"])
def test_html_or_empty_body_is_rejected_and_not_cached(
    body: bytes, pdb_server: Callable[..., _Server], tmp_path: Path
) -> None:
    server = pdb_server({"/download/1ABC.cif": body, "/download/1ABC.pdb": body})
    with pytest.raises(StructureError, match="sent no structure for 1ABC") as exc:
        fetch_pdb("1ABC", cache_dir=tmp_path, base_url=_url(server))
    _assert_one_line(exc)
    assert not list(tmp_path.iterdir())


def test_bad_cif_body_falls_back_to_pdb(
    pdb_server: Callable[..., _Server], villin_pdb: Path, tmp_path: Path
) -> None:
    server = pdb_server(
        {"/download/1ABC.cif": b"<html>not here</html>", "/download/1ABC.pdb": villin_pdb.read_bytes()}
    )
    assert fetch_pdb("1ABC", cache_dir=tmp_path, base_url=_url(server)) == tmp_path / "1ABC.pdb"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1ABC.pdb"]


@pytest.mark.parametrize("pdb_id", ["UBQ1", "1UB", "1UBQX", "1U-Q"])
def test_fetch_rejects_malformed_ids(pdb_id: str, tmp_path: Path) -> None:
    with pytest.raises(StructureError, match="is not a PDB id"):
        fetch_pdb(pdb_id, cache_dir=tmp_path)
