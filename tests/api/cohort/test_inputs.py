"""Finding a cohort's scans (folders, list files, BIDS roots) and naming their outputs."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import make_image, smooth_volume

from volsr.api.cohort.inputs import Scan, discover, is_dicom_folder, plan_outputs
from volsr.api.outputs import bids_output_name
from volsr.data.dicom_writer import save_dicom_series
from volsr.errors import VolsrInputError


def _nifti(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(smooth_volume((6, 6, 3)).astype(np.float32), np.eye(4)), path)
    return path


def test_a_folder_is_walked_and_outputs_keep_its_layout(tmp_path):
    root = tmp_path / "cohort"
    _nifti(root / "site1" / "a.nii.gz")
    _nifti(root / "b.nii")
    _nifti(root / ".hidden" / "c.nii.gz")  # hidden folders and files are not scans
    (root / "site1" / "notes.txt").write_text("not a scan")
    series = make_image(smooth_volume((6, 6, 3)), np.diag([1.0, 1.0, 3.0, 1.0]))
    save_dicom_series(series, root / "site2" / "study")
    assert is_dicom_folder(root / "site2" / "study") and not is_dicom_folder(root / "site1")
    scans = discover([root])
    assert [(s.path, s.relative) for s in scans] == [
        (root / "b.nii", Path("b.nii")),
        (root / "site1" / "a.nii.gz", Path("site1/a.nii.gz")),
        (root / "site2" / "study", Path("site2/study")),
    ]
    jobs = plan_outputs(scans, tmp_path / "out")
    assert [j.dst.relative_to(tmp_path / "out").as_posix() for j in jobs] == [
        "b_sr.nii.gz",
        "site1/a_sr.nii.gz",
        "site2/study_sr.nii.gz",
    ]
    # a series folder named alone is one scan, as before
    assert discover([root / "site2" / "study"]) == [Scan(root / "site2" / "study")]


def test_list_files_text_and_json_datalist(tmp_path):
    a, b = _nifti(tmp_path / "data" / "x" / "a.nii.gz"), _nifti(tmp_path / "data" / "y" / "b.nii.gz")
    text = tmp_path / "data" / "cohort.txt"
    text.write_text("# two scans\nx/a.nii.gz\n\n" + f"{b}\n")  # relative to the list, or absolute
    datalist = tmp_path / "data" / "datalist.json"
    datalist.write_text(json.dumps({"testing": [{"image": "x/a.nii.gz"}, {"image": "y/b.nii.gz"}]}))
    for listing in (text, datalist):
        scans = discover([listing])
        assert [s.path.resolve() for s in scans] == [a.resolve(), b.resolve()]
        assert [s.relative.as_posix() for s in scans] == ["x/a.nii.gz", "y/b.nii.gz"]
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(VolsrInputError, match="lists no scans"):
        discover([empty])


def test_bids_root_goes_to_derivatives_with_desc_sr(tmp_path):
    root = tmp_path / "bids"
    (root / "dataset_description.json").parent.mkdir()
    (root / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0"}')
    _nifti(root / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    _nifti(root / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_acq-thick_T2w.nii.gz")
    _nifti(root / "sub-02" / "ses-1" / "func" / "sub-02_ses-1_task-rest_bold.nii.gz")  # not anat
    jobs = plan_outputs(discover([root]), None)
    assert [j.dst.relative_to(root).as_posix() for j in jobs] == [
        "derivatives/volsr/sub-01/anat/sub-01_desc-sr_T1w.nii.gz",
        "derivatives/volsr/sub-02/ses-1/anat/sub-02_ses-1_acq-thick_desc-sr_T2w.nii.gz",
    ]
    assert bids_output_name("sub-1_desc-raw_T1w.nii") == "sub-1_desc-sr_T1w.nii.gz"


def test_outputs_that_would_collide_are_refused_before_any_work(tmp_path):
    a, b = _nifti(tmp_path / "x" / "scan.nii.gz"), _nifti(tmp_path / "y" / "scan.nii.gz")
    with pytest.raises(VolsrInputError, match="same output name"):
        plan_outputs(discover([a, b]), tmp_path / "out")
    with pytest.raises(ValueError, match=r"need a folder: OutputOptions\(path=DIR\)$"):
        plan_outputs(discover([tmp_path / "x"]), None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VolsrInputError, match="holds no scans"):
        discover([tmp_path / "empty"])


def test_a_scan_given_twice_is_kept_once_with_a_note(tmp_path, monkeypatch):
    """By two names, through a list, and inside a folder given too: one scan each, the first naming kept."""
    from volsr.errors import VolsrInputWarning

    a = _nifti(tmp_path / "cohort" / "a.nii.gz")
    b = _nifti(tmp_path / "cohort" / "b.nii.gz")
    listed = tmp_path / "list.txt"
    listed.write_text("cohort/a.nii.gz\ncohort/b.nii.gz\n")
    monkeypatch.chdir(tmp_path)
    with pytest.warns(VolsrInputWarning, match="given more than once") as notes:
        scans = discover([a, Path("cohort/./a.nii.gz"), listed, tmp_path / "cohort"])
    assert sorted(str(s.path.resolve()) for s in scans) == sorted(str(p.resolve()) for p in (a, b))
    assert scans[[s.path.resolve() for s in scans].index(a.resolve())].path == a  # the first given
    assert len(notes) == 4  # a by its second name, from the list and from the folder; b from the folder
