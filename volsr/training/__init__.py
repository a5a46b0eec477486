"""Training of SR generators on pairs synthesised from high-resolution scans."""
