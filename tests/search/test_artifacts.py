"""Shared artefacts: atomic writes, built once by concurrent processes, loaded with weights_only."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tinyqml.search.artifacts import ArtifactError, load_weights, lock_path, save_atomic, shared_artifact
from tinyqml.search.errors import SearchError


class Planted:
    """An arbitrary object (a pickle of it could run code on load)."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.getcwd, ())


def _leftovers(folder: Path, name: str) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name != name and not p.name.endswith(".lock")]


def test_save_and_load_roundtrip(tmp_path: Path) -> None:
    state = {"w": torch.arange(4.0), "meta": {"epochs": 3, "name": "x", "shape": (2, 2)}}
    path = save_atomic(state, tmp_path / "sub" / "a.pt")
    back = load_weights(path)
    assert back["w"].equal(state["w"]) and back["meta"] == state["meta"]
    assert _leftovers(path.parent, "a.pt") == []
    assert (path.stat().st_mode & 0o777) == 0o644


def test_a_failing_build_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "net.pt"

    def broken():  # type: ignore[no-untyped-def]
        raise RuntimeError("training diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        shared_artifact(path, broken)
    assert not path.exists() and _leftovers(tmp_path, "net.pt") == []
    assert shared_artifact(path, lambda: {"w": torch.zeros(1)})["w"].tolist() == [0.0]  # the next try builds it


def test_a_failed_save_keeps_the_previous_file(tmp_path: Path) -> None:
    path = save_atomic({"v": torch.tensor(1)}, tmp_path / "a.pt")
    with pytest.raises(ArtifactError, match="weights_only"):
        save_atomic({"v": Planted()}, path)  # written, refused on the check, never published
    assert int(load_weights(path)["v"]) == 1 and _leftovers(tmp_path, "a.pt") == []


def test_weights_only_refuses_a_pickled_object(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"payload": Planted()}, path)  # what someone could plant in a shared folder
    with pytest.raises(ArtifactError, match="weights_only=True refuses"):
        load_weights(path)
    with pytest.raises(ArtifactError, match="weights_only=True refuses"):
        shared_artifact(path, lambda: pytest.fail("an existing file must be loaded, not rebuilt"))


@pytest.mark.parametrize("content", [b"", b"not a torch file", None])
def test_missing_or_corrupt_files_are_named_errors(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "bad.pt"
    if content is None:  # a truncated torch file
        torch.save({"w": torch.zeros(1000)}, path)
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(content)
    with pytest.raises(ArtifactError, match="bad.pt") as exc:
        load_weights(path)
    assert isinstance(exc.value, SearchError)
    with pytest.raises(ArtifactError, match="no artefact"):
        load_weights(tmp_path / "absent.pt")


def test_build_must_be_callable(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="callable"):
        shared_artifact(tmp_path / "a.pt", {"w": 1})  # type: ignore[arg-type]


CHILD = textwrap.dedent("""
    import os, sys, time
    import torch
    from tinyqml.search.artifacts import shared_artifact

    path, marker, go = sys.argv[1:4]
    while not os.path.exists(go):  # start together
        time.sleep(0.01)

    def build():
        with open(marker, "a") as f:
            f.write(f"{os.getpid()}\\n")
        time.sleep(1.0)  # a slow training: the others reach the lock meanwhile
        return {"w": torch.arange(3.0), "by": os.getpid()}

    state = shared_artifact(path, build)
    print(state["by"], state["w"].tolist())
""")


def test_concurrent_processes_build_it_once(tmp_path: Path) -> None:
    path, marker, go = tmp_path / "shared" / "net.pt", tmp_path / "builds.txt", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(marker), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outs]
    builders = marker.read_text().split()
    assert len(builders) == 1  # built exactly once
    assert {out.strip() for out, _ in outs} == {f"{builders[0]} [0.0, 1.0, 2.0]"}  # everyone got that build
    assert lock_path(path).exists() and _leftovers(path.parent, "net.pt") == []
