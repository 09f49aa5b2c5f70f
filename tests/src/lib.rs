//! Integration tests of the FastVM workspace; see `tests/tests`.
