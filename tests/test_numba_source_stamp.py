"""The numba backend's cache guard (fastrnn.backends.numba.source_stamp): a cache directory
whose stamp does not match the package's sources loses this package's compiled files (numba
itself would keep a function compiled against another file's old code), and nothing else."""
import os

import pytest

source_stamp = pytest.importorskip("fastrnn.backends.numba.source_stamp")


def _touch(path):
    with open(path, "w") as f:
        f.write("x")


def test_changed_sources_empty_the_cache(tmp_path):
    ours = ["omp._forward_f32-255.py311.nbi", "omp._forward_f32-255.py311.1.nbc",
            "loops.forward_loop-170.py311.nbi"]
    others = ["othermodule.f-1.py311.nbi", "notes.txt"]
    for name in ours + others:
        _touch(tmp_path / name)
    (tmp_path / source_stamp._STAMP).write_text("an older digest\n")
    assert source_stamp.check(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == sorted(others + [source_stamp._STAMP])
    assert (tmp_path / source_stamp._STAMP).read_text().strip() == source_stamp.sources_digest()
    _touch(tmp_path / ours[0])  # compiled again against the current sources: kept
    assert not source_stamp.check(str(tmp_path))
    assert (tmp_path / ours[0]).exists()


def test_missing_directory_is_left_alone(tmp_path):
    assert not source_stamp.check(str(tmp_path / "absent"))
    assert not source_stamp.check(None)


def test_the_backend_checks_numba_own_cache_directory():
    from fastrnn.backends.numba import loops
    where = source_stamp.cache_dir_of(loops.forward_loop)
    if where is None:
        pytest.skip("this numba does not expose its cache directory")
    stamp = os.path.join(where, source_stamp._STAMP)
    assert os.path.exists(stamp)  # written when the backend was imported
    with open(stamp) as f:
        assert f.read().strip() == source_stamp.sources_digest()
