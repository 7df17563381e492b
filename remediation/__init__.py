"""Remediation: the safety policy that judges every action before the governor and the executor see it.

``remediation.policy`` is pure (no I/O but ``load_policy``) and safe to call from workflow code.
"""
