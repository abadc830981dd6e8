"""Test beds: real controller and agent processes for the tests and the demo.

``local`` runs every process on this machine's loopback. Each test bed tears down everything it
started when closed, also when the code using it fails.
"""
