"""Scans in and out: file and DICOM readers and writers, the stated slice acquisition, intensity scaling.

Also holds the sample scan that ships with volsr (``sample_pd_thick.nii.gz``, see ``README.md`` here).
"""
