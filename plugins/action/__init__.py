"""Ansible action plugins of rayops (this file only gives mypy the package name ``action``: the
module and its action plugin are both ``ray_job.py``; Ansible skips files starting with ``_``)."""
