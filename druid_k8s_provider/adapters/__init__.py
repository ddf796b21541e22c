"""Druid's task adapters, one module each, and what they share; :mod:`druid_k8s_provider.job_builder` is
the entry point."""
