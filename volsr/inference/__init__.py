"""Applying a network to a scan: sliding-window inference, data consistency, devices and autocast."""
