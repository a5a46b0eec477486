"""Temporaries being written are removed by an interrupted run; finished ones are not."""

from volsr.data.temporaries import discard_temporaries, in_flight, register, release


def test_registered_files_and_folders_are_removed_and_released_ones_kept(tmp_path):
    half_file, half_folder, finished = tmp_path / ".a.tmp", tmp_path / ".series.tmp", tmp_path / ".b.tmp"
    half_file.write_bytes(b"half")
    (half_folder / "IM_00001.dcm").parent.mkdir()
    (half_folder / "IM_00001.dcm").write_bytes(b"slice")
    finished.write_bytes(b"done")
    register(half_file)
    register(half_folder)
    with in_flight(finished):
        pass  # written and released
    register(tmp_path / ".never_made.tmp")  # removing what is not there is no error
    removed = discard_temporaries()
    assert set(removed) == {half_file, half_folder, tmp_path / ".never_made.tmp"}
    assert not half_file.exists() and not half_folder.exists() and finished.exists()
    assert discard_temporaries() == []
    release(half_file)  # releasing twice is harmless
