"""Renderers of one RunReport. They read only onboard.harness.result."""
