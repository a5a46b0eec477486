"""Super-resolution over cohorts: many scans in, many outputs out, on one or many processes.

:mod:`~volsr.cohort.inputs` finds the scans (files, folders, list files, BIDS datasets) and names
their outputs; :mod:`~volsr.cohort.manifest` records every scan in the output folder;
:mod:`~volsr.cohort.sharding` splits the cohort over torchrun ranks or job-array tasks;
:mod:`~volsr.cohort.runner` runs one process's share (read ahead, write behind, resume).

Example:
    >>> from volsr.cohort import infer_cohort
    >>> result = infer_cohort(["bids_root/"], bundle="volsr_cnn3d")   # -> bids_root/derivatives/volsr
"""

from volsr.cohort.runner import CohortResult, Request, infer_cohort, run_jobs

__all__ = ["CohortResult", "Request", "infer_cohort", "run_jobs"]
