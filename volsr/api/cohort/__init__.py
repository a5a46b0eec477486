"""Super-resolution over cohorts: many scans in, many outputs out, on one or many processes.

:mod:`~volsr.api.cohort.inputs` finds the scans (files, folders, list files, BIDS datasets) and plans
their outputs (named by :mod:`volsr.api.outputs`); :mod:`~volsr.api.cohort.manifest` records every
scan in the output folder; :mod:`~volsr.api.cohort.sharding` splits the cohort over torchrun ranks
or job-array tasks; :mod:`~volsr.api.cohort.runner` runs one process's share (read ahead, write
behind, resume).

Example:
    >>> from volsr.api.cohort import infer_cohort
    >>> result = infer_cohort(["bids_root/"], bundle="volsr_cnn3d")   # -> bids_root/derivatives/volsr
"""

from volsr.api.cohort.runner import CohortResult, infer_cohort, run_jobs

__all__ = ["CohortResult", "infer_cohort", "run_jobs"]
