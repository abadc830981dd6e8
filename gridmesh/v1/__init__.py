"""Generated code of the gridmesh.v1 contract (from proto/gridmesh/v1; regenerate with scripts/gen-proto)."""
