"""gridmesh: one policy-governed GPU grid across many sites."""
